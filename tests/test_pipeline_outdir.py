"""Temporary output directory, refusal to clobber, and the final rename."""
import pytest

from pipeline import outdir


def test_refuses_existing_output_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        outdir.start(str(tmp_path / "out"), overwrite=False)


def test_commit_replaces_old_output_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset.json").write_text("{}")   # an earlier dataset: what --overwrite may replace
    (out / "stale.txt").write_text("old")
    tmp = outdir.start(str(out), overwrite=True)
    outdir.write_bytes(outdir.join(tmp, "train", "a.tfrecord"), b"x")
    outdir.write_bytes(outdir.join(tmp, "dataset.json"), b"{}")
    assert outdir.list_files(tmp) == ["dataset.json", "train/a.tfrecord"]
    outdir.commit(tmp, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert outdir.list_files(str(out)) == ["dataset.json", "train/a.tfrecord"]
