"""A comma list that starts with a negative number is a value on every command line."""
import argparse

import pytest

from dsnn_keras.cli_args import accept_negative_lists


def _parser():
    parser = accept_negative_lists(argparse.ArgumentParser())
    parser.add_argument("--values")
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("positional", nargs="?")
    return parser


@pytest.mark.parametrize("value", ["-1,0,1", "-18,6", "-1e-3,2", "-.5,1", "-1", "-0.25", "-6, 0", "-8,none", "-5,None,-3"])
def test_a_negative_list_after_an_option_is_its_value(value):
    assert _parser().parse_args(["--values", value]).values == value


def test_plain_argparse_refuses_the_same_list():
    parser = argparse.ArgumentParser()
    if parser._negative_number_matcher.match("-1,0,1"):   # pylint: disable=protected-access
        pytest.skip("this Python's argparse already reads -1,0,1 as a value (3.14 and later)")
    parser.add_argument("--values")
    with pytest.raises(SystemExit):
        parser.parse_args(["--values", "-1,0,1"])


def test_a_token_that_is_not_a_number_list_is_still_an_option(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--values", "-x"])
    assert "expected one argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--values", "-none"])
    assert "expected one argument" in capsys.readouterr().err


def test_options_and_positionals_parse_as_before():
    args = _parser().parse_args(["--flag", "run", "--values=-2,3"])
    assert (args.flag, args.positional, args.values) == (True, "run", "-2,3")


def test_a_parser_with_a_negative_number_option_is_refused():
    parser = argparse.ArgumentParser()
    parser.add_argument("-1", dest="one", action="store_true")
    with pytest.raises(ValueError, match="negative number"):
        accept_negative_lists(parser)


def test_dsnn_eval_takes_negative_word_bonuses():
    from dsnn_keras.evaluate import build_parser

    args = build_parser().parse_args(["run", "--data", "d", "--decoder", "beam", "--tune",
                                      "--tune_word_bonuses", "-2,-1,0"])
    assert args.tune_word_bonuses == "-2,-1,0"
    args = build_parser().parse_args(["run", "--data", "d", "--tune", "--tune_token_min_logps", "-8,none"])
    assert args.tune_token_min_logps == "-8,none"


def test_dsnn_prepare_takes_a_negative_gain_range():
    from pipeline.prepare import build_parser

    args, rest = build_parser().parse_known_args(["--input", "corpus", "--out", "o", "--augment", "gain",
                                                  "--gain_db", "-18,0", "--channel_tilt_db", "-3,3"])
    assert (args.gain_db, args.channel_tilt_db, rest) == ("-18,0", "-3,3", [])


def test_dsnn_synth_takes_a_negative_gain_range():
    from pipeline.synth.cli import build_parser

    args = build_parser().parse_args(["--out", "o", "--num_utterances", "3", "--gain_db", "-6,0"])
    assert args.gain_db == (-6.0, 0.0)


@pytest.mark.parametrize("module, name", [("dsnn_keras.cli", "_train_parser"), ("dsnn_keras.cli", "_lm_parser"),
                                          ("dsnn_job.cli", "_parser"), ("tflite.cli", "_export_parser"),
                                          ("tflite.cli", "_transcribe_parser"), ("tflite.cli", "_bench_parser")])
def test_every_command_parser_accepts_negative_lists(module, name):
    import importlib

    parser = getattr(importlib.import_module(module), name)()
    assert parser._negative_number_matcher.match("-1,2")   # pylint: disable=protected-access
    assert parser._negative_number_matcher.match("-1") and not parser._negative_number_matcher.match("-x")
