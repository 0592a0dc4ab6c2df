"""Every annotation parser on small files, including errors that name the file and the line or entry."""

from __future__ import annotations

import json
import logging
import os

import pytest

from adaptkit.data import (
    AnnotationError,
    Annotations,
    VideoRecord,
    check_video_files,
    kinetics_classes,
    list_annotation_formats,
    load_annotations,
    parse_video_list,
    register_annotation_format,
)


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---- MMAction2 video list ---------------------------------------------------------------------------------------


def test_video_list(tmp_path):
    path = write(tmp_path / "list.txt", "a/x.mp4 2\n\nb/y.webm 0\n")
    ann = load_annotations("video_list", path, root="/data")
    assert ann.records == [VideoRecord("/data/a/x.mp4", 2, "a/x"), VideoRecord("/data/b/y.webm", 0, "b/y")]
    assert ann.classes == ["0", "1", "2"] and len(ann) == 2 and ann.num_classes == 3


def test_video_list_with_class_names_and_no_root(tmp_path):
    path = write(tmp_path / "list.txt", "x.mp4 1\n")
    ann = parse_video_list(path, classes=["cat", "dog"])
    assert ann.records[0].path == "x.mp4" and ann.classes == ["cat", "dog"]


@pytest.mark.parametrize(
    "bad_line, message",
    [("c.mp4 one", "label must be an integer"), ("c.mp4 1 2", "expected 'path label'"), ("c.mp4", "expected"),
     ("c.mp4 -1", "label -1")],
)
def test_video_list_bad_line_names_file_and_line(tmp_path, bad_line, message):
    path = write(tmp_path / "list.txt", f"a.mp4 0\n\nb.mp4 1\n{bad_line}\n")
    with pytest.raises(AnnotationError, match=message) as info:
        parse_video_list(path)
    assert info.value.line == 4 and f"{path}, line 4" in str(info.value)


def test_video_list_label_beyond_classes(tmp_path):
    path = write(tmp_path / "list.txt", "a.mp4 2\n")
    with pytest.raises(AnnotationError, match=r"line 1: label 2 outside \[0, 2\)"):
        parse_video_list(path, classes=["a", "b"])


def test_video_list_num_classes_fixes_the_classes_and_names_the_line_past_them(tmp_path):
    path = write(tmp_path / "list.txt", "a.mp4 0\nb.mp4 2\n")
    ann = parse_video_list(path, num_classes=4)  # classes without videos still exist
    assert ann.classes == ["0", "1", "2", "3"] and [r.label for r in ann.records] == [0, 2]
    with pytest.raises(AnnotationError, match=r"list.txt, line 2: label 2 outside \[0, 2\)"):
        parse_video_list(path, num_classes=2)
    assert parse_video_list(path, classes=["a", "b", "c"], num_classes=3).classes == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 class names given for num_classes=3"):
        parse_video_list(path, classes=["a", "b"], num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        parse_video_list(path, num_classes=0)


# ---- Kinetics CSV -----------------------------------------------------------------------------------------------

TRAIN_CSV = """label,youtube_id,time_start,time_end,split,is_cc
riding a bike,abc,14,24,train,0
abseiling,def,0,10,train,0
"zumba, dancing",ghi,5,15,train,1
abseiling,jkl,100,110,train,0
"""


def test_kinetics_train_csv_classes_are_sorted_unique_names(tmp_path):
    path = write(tmp_path / "train.csv", TRAIN_CSV)
    ann = load_annotations("kinetics_csv", path, root="k400/train")
    assert ann.classes == ["abseiling", "riding a bike", "zumba, dancing"] == kinetics_classes(path)
    assert ann.records[0] == VideoRecord(os.path.join("k400/train", "abc_000014_000024.mp4"), 1, "abc")
    assert [r.label for r in ann.records] == [1, 0, 2, 0]
    assert ann.records[3].path.endswith("jkl_000100_000110.mp4")


def test_kinetics_validation_csv_uses_train_classes(tmp_path):
    classes = kinetics_classes(write(tmp_path / "train.csv", TRAIN_CSV))
    val = write(tmp_path / "val.csv", 'label,youtube_id,time_start,time_end,split\n"zumba, dancing",xyz,1,11,val\n')
    ann = load_annotations("kinetics_csv", val, classes=classes, class_folders=True)
    assert ann.records == [VideoRecord(os.path.join("zumba, dancing", "xyz_000001_000011.mp4"), 2, "xyz")]
    assert ann.classes == classes


def test_kinetics_csv_without_header(tmp_path):
    path = write(tmp_path / "train.csv", "b,id1,0,10,train\na,id2,3,13,train\n")
    ann = load_annotations("kinetics_csv", path)
    assert [(r.label, r.path) for r in ann.records] == [(1, "id1_000000_000010.mp4"), (0, "id2_000003_000013.mp4")]


def test_kinetics_csv_header_in_another_order_is_read_by_name(tmp_path):
    """Re-exported lists put the columns in other orders (and spreadsheet programs add a byte-order mark)."""
    text = "\ufeff\nYOUTUBE_ID,time_start,Time_End,label\nid1,0,10,b\n\nid2,3,13,a\n"
    ann = load_annotations("kinetics_csv", write(tmp_path / "train.csv", text))
    assert ann.classes == ["a", "b"]
    assert [(r.label, r.path) for r in ann.records] == [(1, "id1_000000_000010.mp4"), (0, "id2_000003_000013.mp4")]
    with pytest.raises(AnnotationError, match=r"line 2: expected columns youtube_id,time_start,time_end,label"):
        load_annotations("kinetics_csv", write(tmp_path / "short.csv", "youtube_id,time_start,time_end,label\nid,0\n"))
    with pytest.raises(AnnotationError, match=r"line 1: header lacks columns \['label'\] \(a test split"):
        load_annotations("kinetics_csv", write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\n"))
    with pytest.raises(AnnotationError, match=r"line 1: header lacks columns \['youtube_id'\]"):  # a renamed column
        load_annotations("kinetics_csv", write(tmp_path / "renamed.csv", "label,video,time_start,time_end\na,x,0,1\n"))


@pytest.mark.parametrize(
    "bad_line, message",
    [("riding a bike,abc,x,24,train", "time_start must be an integer"), ("walking,abc,1,2,train", "unknown class"),
     ("abseiling,abc", "expected columns")],
)
def test_kinetics_bad_line_names_file_and_line(tmp_path, bad_line, message):
    classes = ["abseiling", "riding a bike"]
    header = "label,youtube_id,time_start,time_end,split"
    path = write(tmp_path / "val.csv", f"{header}\nabseiling,a,0,10,val\n{bad_line}\n")
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations("kinetics_csv", path, classes=classes)
    assert info.value.line == 3 and f"{path}, line 3" in str(info.value)


# ---- Something-Something-v2 -------------------------------------------------------------------------------------


@pytest.fixture
def ssv2_labels(tmp_path):
    return write_json(
        tmp_path / "labels.json",
        {"Pushing something from left to right": "1", "Approaching something with your camera": "0"},
    )


def test_ssv2(tmp_path, ssv2_labels):
    entries = [
        {"id": "78687", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
        {"id": "42326", "template": "Approaching [something] with your camera", "placeholders": ["x"]},
    ]
    ann = load_annotations("ssv2_json", write_json(tmp_path / "train.json", entries), root="ssv2")
    assert ann.classes == ["Approaching something with your camera", "Pushing something from left to right"]
    assert ann.records == [
        VideoRecord(os.path.join("ssv2", "78687.webm"), 1, "78687"),
        VideoRecord(os.path.join("ssv2", "42326.webm"), 0, "42326"),
    ]


@pytest.mark.parametrize(
    "bad_entry, message",
    [({"id": "1", "template": "Juggling [something]"}, "not in"), ({"id": "1"}, "the test split has no labels")],
)
def test_ssv2_bad_entry_names_file_and_entry(tmp_path, ssv2_labels, bad_entry, message):
    entries = [{"id": "5", "template": "Pushing [something] from left to right"}, bad_entry]
    path = write_json(tmp_path / "validation.json", entries)
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations("ssv2_json", path, labels_path=ssv2_labels)
    assert info.value.entry == 1 and f"{path}, entry 1" in str(info.value)


def test_ssv2_labels_with_non_numeric_id(tmp_path):
    write_json(tmp_path / "labels.json", {"Pushing something": "zero"})  # found next to train.json
    with pytest.raises(AnnotationError, match="must be an integer") as info:
        load_annotations("ssv2_json", write_json(tmp_path / "train.json", []))
    assert str(tmp_path / "labels.json") in str(info.value)


def test_ssv2_official_labels_file_name_is_found(tmp_path):
    labels = {"Pushing something": "1", "Holding something": "0"}
    write_json(tmp_path / "something-something-v2-labels.json", labels)
    entries = [{"id": "7", "label": "pushing a cup", "template": "Pushing [something]", "placeholders": ["a cup"]}]
    ann = load_annotations("ssv2_json", write_json(tmp_path / "validation.json", entries))
    assert ann.classes == ["Holding something", "Pushing something"] and ann.records[0].label == 1


def test_ssv2_missing_labels_file_names_the_option(tmp_path):
    path = write_json(tmp_path / "train.json", [])
    with pytest.raises(AnnotationError, match="data.options.labels_path") as info:
        load_annotations("ssv2_json", path)
    assert "something-something-v2-labels.json" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(AnnotationError, match="data.options.labels_path"):
        load_annotations("ssv2_json", path, labels_path=tmp_path / "nope.json")


def test_invalid_json_names_file_and_line(tmp_path, ssv2_labels):
    path = write(tmp_path / "train.json", '[\n{"id": "1",\n oops}\n]')
    with pytest.raises(AnnotationError, match="invalid JSON") as info:
        load_annotations("ssv2_json", path)
    assert info.value.line == 3


# ---- Diving-48 --------------------------------------------------------------------------------------------------


def test_diving48(tmp_path):
    entries = [
        {"vid_name": "-mmq0PT-u8k_00155", "label": 0, "start_frame": 0, "end_frame": 184},
        {"vid_name": "abc_00001", "label": 47, "start_frame": 10, "end_frame": 60},
    ]
    vocab = write_json(tmp_path / "vocab.json", [["Back", "15som", "05Twis", "FREE"]] * 48)
    ann = load_annotations("diving48_json", write_json(tmp_path / "train.json", entries), root="d48", vocab_path=vocab)
    assert ann.records[1] == VideoRecord(os.path.join("d48", "abc_00001.mp4"), 47, "abc_00001", 10, 60)
    assert ann.num_classes == 48 and ann.classes[0] == "Back 15som 05Twis FREE"
    assert load_annotations("diving48_json", tmp_path / "train.json").classes[:2] == ["0", "1"]
    with pytest.raises(AnnotationError, match="nothere.json: Diving-48 vocabulary file not found .*vocab_path"):
        load_annotations("diving48_json", tmp_path / "train.json", vocab_path=tmp_path / "nothere.json")


@pytest.mark.parametrize(
    "bad_entry, message",
    [({"vid_name": "a", "label": 48, "start_frame": 0, "end_frame": 5}, "label 48 outside"),
     ({"vid_name": "a", "label": 1, "start_frame": 0}, "expected an object with keys"),
     ({"vid_name": "a", "label": 1, "start_frame": 9, "end_frame": 5}, "start_frame < end_frame")],
)
def test_diving48_bad_entry_names_file_and_entry(tmp_path, bad_entry, message):
    ok = {"vid_name": "b", "label": 1, "start_frame": 0, "end_frame": 5}
    path = write_json(tmp_path / "test.json", [ok, ok, bad_entry])
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations("diving48_json", path)
    assert info.value.entry == 2 and str(path) in str(info.value)


# ---- folder tree ------------------------------------------------------------------------------------------------


def test_folder_tree(tmp_path):
    for relative in ["walk/b.mp4", "walk/a.MKV", "run/x/c.webm", "run/notes.txt", ".hidden/d.mp4", "top.mp4"]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    ann = load_annotations("folder_tree", tmp_path)
    assert ann.classes == ["run", "walk"]
    assert [(r.label, r.video_id) for r in ann.records] == [(0, "run/x/c"), (1, "walk/a"), (1, "walk/b")]
    assert ann.records[0].path == os.path.join(str(tmp_path), "run/x/c.webm")
    assert load_annotations("folder_tree", tmp_path, root="/elsewhere").records[0].path == "/elsewhere/run/x/c.webm"


def test_folder_tree_follows_symlinked_folders_once(tmp_path):
    """Datasets assembled with symlinks: a class folder, or a folder inside one, that is a link is read through; a
    link back up the tree (a cycle) or a second link to a folder already read adds nothing and does not loop."""
    store, tree = tmp_path / "store", tmp_path / "tree"
    for relative in ["jump/a.mp4", "run_part/b.mp4", "walk/c.mp4"]:
        (store / relative).parent.mkdir(parents=True, exist_ok=True)
        (store / relative).write_bytes(b"")
    (tree / "run").mkdir(parents=True)
    (tree / "walk").mkdir()
    (tree / "walk" / "d.mp4").write_bytes(b"")
    os.symlink(store / "jump", tree / "jump")  # a whole class linked in
    os.symlink(store / "run_part", tree / "run" / "part")  # part of a class linked in
    os.symlink(tree / "walk", tree / "walk" / "again")  # a cycle
    os.symlink(store / "walk", tree / "walk" / "more")
    os.symlink(store / "walk", tree / "walk" / "more_again")  # the same folder twice in one class
    ann = load_annotations("folder_tree", tree)
    assert ann.classes == ["jump", "run", "walk"]
    assert [(r.label, r.video_id) for r in ann.records] == [(0, "jump/a"), (1, "run/part/b"), (2, "walk/d"),
                                                            (2, "walk/more/c")]
    assert ann.records[1].path == os.path.join(str(tree), "run/part/b.mp4")


def test_folder_tree_without_videos(tmp_path):
    (tmp_path / "class_a").mkdir()
    with pytest.raises(AnnotationError, match="no videos"):
        load_annotations("folder_tree", tmp_path)
    with pytest.raises(AnnotationError, match="not a folder"):
        load_annotations("folder_tree", tmp_path / "missing")


# ---- registry ---------------------------------------------------------------------------------------------------


def test_registry_lists_formats_and_rejects_unknown_ones(tmp_path):
    assert {"video_list", "kinetics_csv", "ssv2_json", "diving48_json", "folder_tree"} <= set(list_annotation_formats())
    with pytest.raises(ValueError, match="valid: .*video_list"):
        load_annotations("csv_of_doom", tmp_path)
    with pytest.raises(ValueError, match="already registered"):
        register_annotation_format("video_list")(parse_video_list)


def test_registering_a_new_format(tmp_path):
    from adaptkit.data.annotations import ANNOTATION_FORMATS

    @register_annotation_format("one_per_line_test_only")
    def parse(path, root=None):
        with open(path) as file:
            names = file.read().split()
        return Annotations([VideoRecord(n, 0, n) for n in names], ["only"])

    try:
        ann = load_annotations("one_per_line_test_only", write(tmp_path / "f.txt", "a.mp4 b.mp4"))
        assert [r.path for r in ann.records] == ["a.mp4", "b.mp4"]
    finally:
        del ANNOTATION_FORMATS["one_per_line_test_only"]


# ---- real copies: renamed class folders, other extensions, duplicate rows, non-integer fields -------------------


def test_kinetics_class_folders_renamed_by_mmaction2_are_found(tmp_path):
    """MMAction2's rename_classnames.sh turns spaces into underscores (AIM's copy turns ')' into '-'; detox also drops
    quotes and parentheses); the exact folder name wins when it exists."""
    rows = ['air drumming,a,0,10,train', '"passing American football (in game)",b,0,10,train',
            "massaging person's head,c,0,10,train", "abseiling,d,0,10,train"]
    path = write(tmp_path / "train.csv", "\n".join(rows) + "\n")
    for folder in ("air_drumming", "passing_American_football_in_game", "massaging_persons_head", "abseiling",
                   "abseiling_"):
        (tmp_path / "videos" / folder).mkdir(parents=True)
    ann = load_annotations("kinetics_csv", path, root=str(tmp_path / "videos"), class_folders=True)
    folders = {ann.classes[r.label]: os.path.basename(os.path.dirname(r.path)) for r in ann.records}
    assert folders == {"air drumming": "air_drumming", "passing American football (in game)":
                       "passing_American_football_in_game", "massaging person's head": "massaging_persons_head",
                       "abseiling": "abseiling"}


def test_kinetics_class_folder_matching_stays_exact_when_ambiguous(tmp_path):
    path = write(tmp_path / "train.csv", "a b,x,0,10,train\nab,y,0,10,train\n")
    (tmp_path / "videos" / "a_b").mkdir(parents=True)  # could be either class: left as listed, reported missing
    ann = load_annotations("kinetics_csv", path, root=str(tmp_path / "videos"), class_folders=True)
    assert [os.path.basename(os.path.dirname(r.path)) for r in ann.records] == ["a b", "ab"]


def test_video_extension_is_an_option_of_each_format(tmp_path, ssv2_labels):
    csv_path = write(tmp_path / "train.csv", "a,id1,0,10,train\n")
    assert load_annotations("kinetics_csv", csv_path, extension="mkv").records[0].path == "id1_000000_000010.mkv"
    ssv2 = write_json(tmp_path / "train.json", [{"id": "7", "template": "Approaching [something] with your camera"}])
    assert load_annotations("ssv2_json", ssv2).records[0].path == "7.webm"
    assert load_annotations("ssv2_json", ssv2, extension=".mp4").records[0].path == "7.mp4"
    diving = write_json(tmp_path / "d.json", [{"vid_name": "v", "label": 1, "start_frame": 0, "end_frame": 5}])
    assert load_annotations("diving48_json", diving, extension=".webm").records[0].path == "v.webm"
    with pytest.raises(ValueError, match="extension must be like '.mp4', got '../x'"):
        load_annotations("diving48_json", diving, extension="../x")


def test_a_missing_file_is_found_under_another_video_extension(tmp_path):
    (tmp_path / "a.mp4").touch()
    (tmp_path / "b.webm").touch()
    records = [VideoRecord(str(tmp_path / "a.webm"), 0, "a"), VideoRecord(str(tmp_path / "b.webm"), 1, "b"),
               VideoRecord(str(tmp_path / "c.webm"), 1, "c")]
    check = check_video_files(records)
    assert [r.path for r in check.found] == [str(tmp_path / "a.mp4"), str(tmp_path / "b.webm")]
    assert check.missing == [2] and check.other_extension == 1 and check.missing_fraction == pytest.approx(1 / 3)
    assert check.classes_without_video(["x", "y"]) == []
    assert check_video_files(records, extensions=()).missing == [0, 2]
    summary = check_video_files(records[2:] + records[:1], extensions=()).summary(["x", "y"])
    assert summary.startswith("2 of 2 video files are missing (100.0%; e.g. ")
    assert "left without a video: 'x', 'y'" in summary


def test_duplicate_rows_are_dropped_with_one_warning(tmp_path, ssv2_labels, caplog):
    """Evaluation would count a video listed twice twice; the copies go, with the lines named once."""
    header = "label,youtube_id,time_start,time_end,split\n"
    path = write(tmp_path / "val.csv", header + "a,x,0,10,val\nb,y,0,10,val\na,x,0,10,val\na,x,0,10,val\n")
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        ann = load_annotations("kinetics_csv", path)
    assert [r.video_id for r in ann.records] == ["x", "y"]
    assert f"{path}: 2 duplicate lines dropped" in caplog.text and "line 4 repeats line 2" in caplog.text
    same_id_other_window = write(tmp_path / "w.csv", header + "a,x,0,10,val\na,x,20,30,val\n")
    assert len(load_annotations("kinetics_csv", same_id_other_window)) == 2  # two clips of one YouTube video
    entry = {"id": "7", "template": "Approaching [something] with your camera"}
    assert len(load_annotations("ssv2_json", write_json(tmp_path / "s.json", [entry, entry]))) == 1
    listed = write(tmp_path / "list.txt", "v/a.mp4 0\nv/a.mp4 0\nv/b.mp4 1\n")
    assert len(load_annotations("video_list", listed)) == 2


@pytest.mark.parametrize("fmt", ["kinetics_csv", "ssv2_json", "diving48_json", "video_list"])
def test_one_video_with_two_labels_is_an_error_naming_both_places(tmp_path, ssv2_labels, fmt):
    if fmt == "kinetics_csv":
        path = write(tmp_path / "t.csv", "a,x,0,10,train\nb,y,0,10,train\nb,x,0,10,train\n")
        where = "line 1 says 'a', line 3 says 'b'"
    elif fmt == "video_list":
        path, where = write(tmp_path / "t.txt", "x.mp4 0\ny.mp4 1\nx.mp4 1\n"), "line 1 says '0', line 3 says '1'"
    elif fmt == "ssv2_json":
        templates = ["Approaching [something] with your camera", "Pushing [something] from left to right"]
        path = write_json(tmp_path / "t.json", [{"id": "x", "template": template} for template in templates])
        where = "entry 0 says 'Approaching something with your camera', entry 1 says 'Pushing something from left"
    else:
        entries = [{"vid_name": "x", "label": label, "start_frame": 0, "end_frame": 5} for label in (3, 3, 4)]
        path, where = write_json(tmp_path / "t.json", entries), "entry 0 says '3', entry 2 says '4'"
    with pytest.raises(AnnotationError, match="video 'x' is listed twice with different labels") as info:
        load_annotations(fmt, path)
    assert where in str(info.value) and str(path) in str(info.value)
    if fmt == "kinetics_csv":  # in class folders the two labels make two paths: still one YouTube clip
        with pytest.raises(AnnotationError, match="line 1 says 'a', line 3 says 'b'"):
            load_annotations(fmt, path, class_folders=True)


@pytest.mark.parametrize("label, shown", [(3.7, "3.7"), (True, "True"), ("3.7", "'3.7'"), (None, "None")])
def test_diving48_non_integer_label_is_refused_not_truncated(tmp_path, label, shown):
    entries = [{"vid_name": "a", "label": 1, "start_frame": 0, "end_frame": 5},
               {"vid_name": "b", "label": label, "start_frame": 0, "end_frame": 5}]
    path = write_json(tmp_path / "d.json", entries)
    with pytest.raises(AnnotationError, match=f"label must be an integer, got {shown}") as info:
        load_annotations("diving48_json", path)
    assert info.value.entry == 1 and f"{path}, entry 1 (0-based)" in str(info.value)
    entries[1]["label"] = 3.0  # an integral float (some JSON writers) is the integer it spells
    assert load_annotations("diving48_json", write_json(path, entries)).records[1].label == 3


def test_duplicates_are_found_whatever_way_the_path_is_spelled(tmp_path, caplog):
    """``v/./a.mp4``, ``v//a.mp4`` and ``v/a.mp4`` name one file: listed under two spellings it is one video (kept
    once, or refused with two labels), as it would be listed twice under one."""
    listed = write(tmp_path / "list.txt", "v/a.mp4 0\nv/./a.mp4 0\nv//a.mp4 0\nv/b.mp4 1\n")
    with caplog.at_level(logging.WARNING, logger="adaptkit.data"):
        ann = load_annotations("video_list", listed, root=str(tmp_path))
    assert [r.video_id for r in ann.records] == ["v/a", "v/b"]
    assert "2 duplicate lines dropped" in caplog.text and "line 2 repeats line 1" in caplog.text
    relabelled = write(tmp_path / "two_labels.txt", "v/a.mp4 0\nv/b.mp4 1\n./v/a.mp4 1\n")
    with pytest.raises(AnnotationError, match="listed twice with different labels: line 1 says '0', line 3 says '1'"):
        load_annotations("video_list", relabelled)
