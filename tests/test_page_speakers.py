"""Known speakers on the page: the Files tab takes names with a 2-10 s reference clip each and
labels those voices by name (as the API's known_speaker_names[] / known_speaker_references[] and
the CLI's --speaker-names do), through gradio_client against the running app. The conversation
(JFK and a LibriSpeech reader taking turns) is tests/test_speakers.py's."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests._app_server import app_model_dir, start_app  # noqa: F401 (fixture)
from tests.test_speakers import SR, conversation, voices  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def page(app_model_dir, tmp_path_factory):  # noqa: F811
    from gradio_client import Client
    app = start_app(app_model_dir, tmp_path_factory.mktemp("page_speakers"))
    try:
        yield Client(app.url, verbose=False)
    finally:
        app.stop()


@pytest.fixture(scope="module")
def references(voices, tmp_path_factory):  # noqa: F811
    """4 s of each voice alone (from the end of its recording), and a silent 3 s clip."""
    jfk, libri = voices
    d = tmp_path_factory.mktemp("references")
    out = {"john": d / "john.wav", "reader": d / "reader.wav", "silence": d / "silence.wav"}
    sf.write(out["john"], jfk[-4 * SR:], SR)
    sf.write(out["reader"], libri[-4 * SR:], SR)
    sf.write(out["silence"], np.zeros(3 * SR, np.float32), SR)
    return out


def _changes(labels) -> list[str]:
    """The labels with repeats in a row taken out (a turn may hold several segments)."""
    out = []
    for label in labels:
        if not out or out[-1] != label:
            out.append(label)
    return out


def _transcribe(page, path, speakers, names, clips):
    from gradio_client import handle_file
    return page.predict([handle_file(str(path))], None, "auto", True, "", speakers, names,
                        [handle_file(str(c)) for c in clips], api_name="/transcribe")


def test_known_speakers_are_labelled_by_name(page, conversation, references):  # noqa: F811
    path, _ = conversation
    # Speakers left Off: known speakers imply Automatic; the names in the clips' order
    _, transcript, _, rows, _ = _transcribe(page, path, "off", "Reader, John",
                                            [references["reader"], references["john"]])
    assert rows[0]["speakers"] == ["John", "Reader"], rows[0].get("speakers_error")
    turns = ["John", "Reader", "John", "Reader"]     # the conversation's, in order
    assert _changes(s["speaker"] for s in rows[0]["segments"]) == turns
    assert _changes(p.split(":")[0] for p in transcript.split("\n\n")) == turns
    # one known voice: the other stays a letter
    _, _, _, rows, _ = _transcribe(page, path, "auto", "Reader", [references["reader"]])
    assert sorted(rows[0]["speakers"]) == ["A", "Reader"]


@pytest.mark.parametrize("names, clips, words", [
    ("John, Reader", ["john"], "must pair up: 2 names, 1 references"),
    ("<b>John</b>", ["john"], "is not a usable name"),
    ("Quiet", ["silence"], "under 1 s of speech"),
])
def test_bad_known_speakers_name_the_field(page, conversation, references, names, clips,  # noqa: F811
                                           words):
    from gradio_client.exceptions import AppError
    path, _ = conversation
    with pytest.raises(AppError) as e:
        _transcribe(page, path, "auto", names, [references[c] for c in clips])
    assert "Known speakers" in str(e.value) and words in str(e.value), str(e.value)
