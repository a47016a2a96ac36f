"""pipeline.synth: a synthetic spoken corpus made with espeak-ng, AN4-like or isolated digits (the ``dsnn-synth`` command).

Public API (imports numpy, soundfile and soxr lazily in the functions that need them; never TensorFlow).
"""
from pipeline.synth.audio import Augmentation
from pipeline.synth.corpus import SynthConfig, UtteranceSpec, plan_corpus, render_utterance, write_corpus
from pipeline.synth.espeak import EspeakError, VoiceSettings, synthesize
from pipeline.synth.grammar import sample_transcript, sample_transcripts, spoken_form
from pipeline.synth.speakers import Speaker, SpeakerDesign, assign_speakers

__all__ = [
    "Augmentation", "EspeakError", "Speaker", "SpeakerDesign", "SynthConfig", "UtteranceSpec",
    "VoiceSettings", "assign_speakers", "plan_corpus", "render_utterance", "sample_transcript",
    "sample_transcripts", "spoken_form", "synthesize", "write_corpus",
]
