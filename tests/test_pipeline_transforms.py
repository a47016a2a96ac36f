"""The Beam DoFns, run in a real TestPipeline."""
import numpy as np
import soundfile as sf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import apache_beam as beam
from dsnn_keras.frontend import FeatureConfig
from pipeline.audio import AudioConfig
from pipeline.examples import parse_example
from pipeline.prepare import LOCAL_RUNNER
from pipeline.records import Reject, RejectReason, Utterance
from pipeline.splits import SpeakerSplit
from pipeline.text import TextConfig
from pipeline.tokenizer import load_tokenizer, train_tokenizer
from pipeline.transforms import DecodeUtterance, FeaturizeUtterance, NormalizeDoFn, TrainTokenizerFn


def test_normalize_routes_rejects_and_assigns_speaker_splits():
    items = [Utterance("a", "a.wav", "Hello!", "s1", "train"),
             Utterance("b", "b.wav", "", "s2", "train"),
             Utterance("c", "c.wav", "Yes", "s2", "train"),
             Reject("m.tsv:3", RejectReason.MALFORMED_LINE, "x")]
    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        out = (p | beam.Create(items)
               | beam.ParDo(NormalizeDoFn(TextConfig(), SpeakerSplit(speakers=("s2",))))
               .with_outputs("rejects", main="utts"))
        assert_that(out.utts, equal_to([Utterance("a", "a.wav", "hello", "s1", "train"),
                                        Utterance("c", "c.wav", "yes", "s2", "dev")]), label="utts")
        assert_that(out.rejects | beam.Map(lambda r: (r.path, r.reason)),
                    equal_to([("b.wav", RejectReason.EMPTY_TRANSCRIPT),
                              ("m.tsv:3", RejectReason.MALFORMED_LINE)]), label="rejects")


def test_decode_and_featurize_write_features_and_token_ids(tmp_path):
    rate = 8000
    t = np.arange(rate) / rate
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    model = train_tokenizer(["yes no", "no yes"], 16)
    utts = [Utterance("a", str(tmp_path / "a.wav"), "yes no", "s", "train"),
            Utterance("b", str(tmp_path / "missing.wav"), "no", "s", "train")]
    config = FeatureConfig(num_mel_bins=20)

    def check(outputs):
        prepared = [o for o in outputs if not isinstance(o, Reject)]
        rejects = [o for o in outputs if isinstance(o, Reject)]
        assert [r.reason for r in rejects] == [RejectReason.MISSING_FILE]
        (p,) = prepared
        assert p.num_samples == 16000 and p.features.shape == (config.num_frames(16000), 20)
        ex = parse_example(p.serialized, 20)
        np.testing.assert_array_equal(ex["features"], p.features)
        assert load_tokenizer(model).decode(ex["token_ids"]) == "yes no"

    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        tok = p | "Tok" >> beam.Create([model])
        out = (p | beam.Create(utts)
               | "Decode" >> beam.ParDo(DecodeUtterance(AudioConfig()), beam.pvalue.AsSingleton(tok))
               | "Featurize" >> beam.ParDo(FeaturizeUtterance(config, AudioConfig())))
        assert_that(out, check)


def test_train_tokenizer_fn_trains_on_train_transcripts_only():
    utts = [Utterance("a", "a.wav", "yes no", "s1", "train"),
            Utterance("b", "b.wav", "no yes yes", "s1", "train"),
            Utterance("c", "c.wav", "zebra quartz", "s2", "dev")]

    def check(outputs):
        (model,) = outputs
        sp = load_tokenizer(model)
        assert sp.decode(sp.encode("yes no")) == "yes no"
        pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
        assert not any(ch in "".join(pieces) for ch in "zbqrt")  # dev text never reached the trainer

    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        model = p | beam.Create(utts) | beam.CombineGlobally(TrainTokenizerFn(16, "unigram"))
        assert_that(model, check)
