"""``/v1/realtime``: OpenAI's Realtime API in transcription mode, over a WebSocket.

    ws://HOST:7860/v1/realtime?intent=transcription      (Authorization as for /v1/*)

Client events: ``session.update`` (the GA shape: ``session.type = "transcription"``,
``session.audio.input.{format, transcription, turn_detection, noise_reduction}``) and the older
``transcription_session.update`` (``input_audio_format``, ``input_audio_transcription``,
``turn_detection``), ``input_audio_buffer.append`` / ``.commit`` / ``.clear``.

Server events: ``session.created``, ``session.updated`` (``transcription_session.updated`` for
the older update), ``input_audio_buffer.speech_started`` / ``.speech_stopped`` / ``.committed`` /
``.cleared``, ``conversation.item.input_audio_transcription.delta`` / ``.completed`` /
``.failed`` and ``error``, with OpenAI's payloads. Extensions, all additive:

* audio ``pcm16`` at 24 kHz (OpenAI's only rate) or 16 kHz (``format.rate: 16000``);
* ``transcription.prompt`` is the hotwords (comma separated), ``transcription.itn`` (bool) turns
  inverse text normalisation off; ``transcription.model`` is accepted and ignored;
* ``delta`` is the newly *stable* text of the open utterance (never taken back, so clients can
  append it); the delta event also carries ``partial`` (the whole current hypothesis) and
  ``start`` / ``end`` (seconds of session audio it covers);
* ``completed`` carries ``words`` (``[{word, start, end}]``, docs/timing.md), ``start`` / ``end``
  (seconds from the session's first sample) and
  ``usage: {"type": "duration", "seconds": ...}``; its ``transcript`` equals the offline API's
  text for those samples with the same options.

Limits, each with an ``error`` event and a close code: ``--live-sessions`` sessions at a time
(1013 try again later), ``--live-max-message-mb`` per message (1009 message too big),
``--live-idle-seconds`` without a message (1008). Malformed JSON, JSON nested deeper than 16
levels, unknown events and bad base64 get an ``error`` event and the session goes on. A client
that disconnects frees its session at once (its running decode finishes unseen).

Per connection (serving.limits, docs/security.md): events are read at most 200/s and audio at
most 2x real time (after bursts; beyond, the socket is read more slowly); while more than 1 of
the session's finals waits for the model the socket is not read, and a final over 30 s (a long
commit) is decoded at "bulk" priority, as long audio offline; a client's values are echoed
cut short; a client that leaves 256 events or 1 MB unread is closed as a slow reader (1008).

Layout (as vLLM's entrypoints/openai/<area>/): ``protocol`` the event shapes, parsing and
validation; ``connection`` the WebSocket loop and the session's lifecycle; ``router`` the route.
Imports point downward: router -> connection -> protocol.
"""
from .router import create_router

__all__ = ["create_router"]
