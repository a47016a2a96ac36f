"""pipeline.synth.speakers: speaker grids and held-out test speakers."""
import pytest

from pipeline.synth.speakers import SpeakerDesign, assign_speakers


def test_default_test_grid_shares_no_setting_with_train_grid():
    design = SpeakerDesign()
    assert set(design.train_grid()).isdisjoint(design.test_grid())
    assert set(design.variants).isdisjoint(design.test_variants)
    assert set(design.pitches).isdisjoint(design.test_pitches)


def test_overlapping_grids_are_refused():
    with pytest.raises(ValueError, match="never be used in train/dev"):
        SpeakerDesign(variants=("m1",), test_variants=("m1",), pitches=(50,), test_pitches=(50,),
                      rates=(170,), test_rates=(170,))


def test_grids_disjoint_in_one_dimension_are_accepted():
    design = SpeakerDesign(variants=("m1",), test_variants=("m1",), pitches=(50,), test_pitches=(60,),
                           rates=(170,), test_rates=(170,))
    assert len(design.test_grid()) == len(design.voices)


def test_assigned_speakers_are_disjoint_across_splits_and_test_settings_unseen():
    speakers = assign_speakers(SpeakerDesign(), {"train": 300, "dev": 40, "test": 40}, 10, seed=5)
    by_split = {s: [sp for sp in speakers if sp.split == s] for s in ("train", "dev", "test")}
    assert [len(by_split[s]) for s in ("train", "dev", "test")] == [30, 4, 4]
    train_dev = {sp.settings for sp in by_split["train"] + by_split["dev"]}
    assert {sp.settings for sp in by_split["train"]}.isdisjoint(sp.settings for sp in by_split["dev"])
    assert train_dev.isdisjoint(sp.settings for sp in by_split["test"])
    assert len({sp.speaker_id for sp in speakers}) == len(speakers)
    assert all("-" not in sp.speaker_id for sp in speakers)


def test_assignment_is_seeded():
    sizes = {"train": 50, "dev": 10, "test": 10}
    assert assign_speakers(SpeakerDesign(), sizes, 10, 1) == assign_speakers(SpeakerDesign(), sizes, 10, 1)
    assert assign_speakers(SpeakerDesign(), sizes, 10, 1) != assign_speakers(SpeakerDesign(), sizes, 10, 2)


def test_small_grid_caps_the_number_of_speakers():
    design = SpeakerDesign(voices=("en-us",), variants=("m1",), pitches=(50,), rates=(170, 200),
                           test_variants=("m4",))
    speakers = assign_speakers(design, {"train": 100, "dev": 10, "test": 10}, 10, 0)
    assert sum(s.split == "train" for s in speakers) == 1
    assert sum(s.split == "dev" for s in speakers) == 1


def test_bad_design_values_name_the_field():
    with pytest.raises(ValueError, match="SpeakerDesign.variants"):
        SpeakerDesign(variants=())
    with pytest.raises(ValueError, match="SpeakerDesign.pitches"):
        SpeakerDesign(pitches=(50, 50))
