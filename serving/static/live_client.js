// The page's Live tab: a browser client of /v1/realtime (OpenAI's Realtime API, transcription
// mode). The microphone is captured with getUserMedia and an AudioWorklet at 16 kHz, turned into
// pcm16 and streamed as input_audio_buffer.append events. Nothing is dropped: audio captured
// before the WebSocket opens, or while the network is slow, waits in a queue here (the status
// says how much) and is sent in order. The connection is authorised with a short-lived client
// secret the page's own (Gradio) session obtained: serving/client_secrets.py.
//
// Python side: serving/live_tab.py (the buttons, the secret, the downloads). Loaded into the
// page's <head> by app.py; it only touches elements with ids live-*.
(() => {
  "use strict";
  if (window.funasrLive) return;

  const RATE = 16000;                 // the session's rate (session.audio.input.format.rate)
  const SEND_SAMPLES = RATE / 10;     // one append per 100 ms of audio, as OpenAI's examples
  const MAX_IN_FLIGHT = 256 * 1024;   // bytes the socket may hold unsent before we queue here
  // Audio sent and not yet confirmed by the server (see mark) at most: the rest waits here. A
  // slow uplink must not hold more than a few seconds of data in front of the WebSocket's
  // keepalive pong (the server closes a connection whose pong is 20 s late).
  const MAX_UNCONFIRMED = RATE * 1.5;
  const MARK_EVERY = RATE / 2;        // samples between two delivery marks (see pump)
  const SLOW_AFTER_S = 1.5;           // audio not yet at the server that makes the status say
                                      // "network slow"
  const FINISH_TIMEOUT_MS = 60000;    // Stop waits this long for the last finals

  // The worklet collects 100 ms blocks at RATE. Where the context runs at another rate (a
  // browser that cannot resample a microphone into a 16 kHz context), it resamples itself:
  // a windowed-sinc low-pass at 0.45 x RATE, evaluated at each output instant.
  const WORKLET = `
    class Capture extends AudioWorkletProcessor {
      constructor() {
        super();
        this.buf = new Float32Array(${SEND_SAMPLES}); this.n = 0;
        this.port.onmessage = (e) => { if (e.data === "flush") this.flush(true); };
        this.step = sampleRate / ${RATE};          // input samples per output sample
        if (this.step !== 1) {
          this.half = Math.ceil(8 * this.step);      // taps each side
          this.hist = new Float32Array(this.half);   // input not yet consumed, with history
          this.pos = this.half;                      // next output instant, in hist's samples
          this.cut = 0.45 / this.step;               // cutoff, cycles per input sample
        }
      }
      resample(ch) {
        const hist = new Float32Array(this.hist.length + ch.length);
        hist.set(this.hist); hist.set(ch, this.hist.length);
        const out = [];
        while (this.pos + this.half < hist.length) {
          const c = Math.floor(this.pos), frac = this.pos - c;
          let acc = 0, norm = 0;
          for (let k = -this.half + 1; k <= this.half; k++) {
            const x = k - frac;
            const w = 0.5 + 0.5 * Math.cos(Math.PI * x / this.half);      // Hann
            const h = x === 0 ? 2 * this.cut : Math.sin(2 * Math.PI * this.cut * x) / (Math.PI * x);
            acc += hist[c + k] * h * w; norm += h * w;
          }
          out.push(acc / norm);
          this.pos += this.step;
        }
        const drop = Math.max(0, Math.floor(this.pos) - this.half);
        this.hist = hist.slice(drop);
        this.pos -= drop;
        return out;
      }
      flush(last) {
        this.port.postMessage({samples: this.buf.slice(0, this.n), last});
        this.n = 0;
      }
      process(inputs) {
        let ch = inputs[0] && inputs[0][0];
        if (ch && this.step !== 1) ch = this.resample(ch);
        if (ch) {
          for (let i = 0; i < ch.length; i++) {
            this.buf[this.n++] = ch[i];
            if (this.n === this.buf.length) this.flush(false);
          }
        }
        return true;
      }
    }
    registerProcessor("funasr-capture", Capture);`;

  const $ = (id) => document.getElementById(id);
  const clock = (s) => {
    s = Math.max(0, s);
    const m = Math.floor(s / 60);
    return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
  };
  const esc = (t) => String(t).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;",
                                                          ">": "&gt;", '"': "&quot;"}[c]));

  function toBase64(int16) {
    const bytes = new Uint8Array(int16.buffer, int16.byteOffset, int16.byteLength);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  function toPcm16(f32) {
    const out = new Int16Array(f32.length);
    for (let i = 0; i < f32.length; i++) {
      const v = Math.max(-1, Math.min(1, f32[i]));
      out[i] = v < 0 ? Math.round(v * 32768) : Math.round(v * 32767);
    }
    return out;
  }

  class LiveClient {
    constructor() {
      this.reset();
    }

    reset() {
      this.queue = [];              // Int16Array chunks captured, not yet handed to the socket
      this.queued = 0;              // samples in this.queue
      this.captured = 0;            // samples captured this session
      this.sent = 0;                // samples handed to the socket
      this.marks = [];              // samples sent before each delivery mark, in order
      this.markedAt = 0;            // samples sent at the last mark
      this.delivered = 0;           // samples the server has confirmed it received
      this.finals = [];             // {item, start, end, text, speaker?, language?, words?}
      this.alerts = [];             // compliance.alert events' hits, with their item
      this.shown = "";              // what the list of finals last rendered (see render)
      this.partials = new Map();    // item_id -> text in progress
      this.open = new Set();        // items started and not yet final
      this.state = "idle";          // idle | starting | recording | stopping | stopped | ended
      this.reason = "";
      this.ws = null;
      this.language = null;
      this.waiters = [];
      this.kept = null;
    }

    // -- the microphone ------------------------------------------------------------
    // The audio graph is made before Start (on the page's first click): at Start only the
    // microphone opens and connects, so what is said right after Start reaches the worklet.
    prepare(rate) {
      const want = rate || RATE;
      if (!this.graph || this.graphRate !== want) {
        this.graphRate = want;
        this.graph = (async () => {
          const ctx = new AudioContext({sampleRate: want});
          const url = URL.createObjectURL(new Blob([WORKLET], {type: "text/javascript"}));
          await ctx.audioWorklet.addModule(url);
          URL.revokeObjectURL(url);
          const node = new AudioWorkletNode(ctx, "funasr-capture",
                                            {numberOfInputs: 1, numberOfOutputs: 0});
          node.port.onmessage = (e) => this.onAudio(e.data);
          return {ctx, node};
        })();
        this.graph.catch(() => { this.graph = null; });
      }
      return this.graph;
    }

    async capture() {
      if (this.state === "starting" || this.state === "recording") return;
      this.stopCapture();
      if (this.ws) try { this.ws.close(1000, "restart"); } catch (e) { /* closed */ }
      this.reset();
      this.state = "starting";
      this.render();
      try {
        const own = window.funasrLiveOwnResampler;    // a rate to try the fallback with
        let graph;
        [this.stream, graph] = await Promise.all([
          navigator.mediaDevices.getUserMedia({audio: {
            channelCount: 1, echoCancellation: false, noiseSuppression: false,
            autoGainControl: false}}),
          this.prepare(typeof own === "number" ? own : 0)]);
        // The context runs at the session's rate where the browser can resample the
        // microphone into it (Chromium); elsewhere at its own rate, and the worklet resamples.
        try {
          this.source = graph.ctx.createMediaStreamSource(this.stream);
        } catch (e) {
          graph.ctx.close().catch(() => {});
          this.graph = null;
          const probe = new AudioContext();
          const native = probe.sampleRate;
          probe.close().catch(() => {});
          graph = await this.prepare(native);
          this.source = graph.ctx.createMediaStreamSource(this.stream);
        }
        this.ctx = graph.ctx;
        this.node = graph.node;
        this.source.connect(this.node);
        if (this.ctx.state !== "running") await this.ctx.resume();
        if (this.state === "starting") this.state = "recording";
      } catch (e) {
        this.end(`the microphone could not be opened: ${e && e.message ? e.message : e}`);
      }
      this.render();
    }

    onAudio(data) {
      if (data.samples && data.samples.length) {
        const pcm = toPcm16(data.samples);
        this.queue.push(pcm);
        this.queued += pcm.length;
        this.captured += pcm.length;
        // a copy of everything captured, for tests that compare it with what was sent
        if (window.funasrLiveKeep) (this.kept || (this.kept = [])).push(pcm);
      }
      if (data.last && this.flushed) this.flushed();
      this.pump();
      this.render();
    }

    stopCapture() {
      try { if (this.source) this.source.disconnect(); } catch (e) { /* gone */ }
      if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
      if (this.ctx) this.ctx.suspend().catch(() => {});   // kept for the next Start
      this.stream = this.ctx = this.source = this.node = null;
    }

    async flushCapture() {
      // the worklet's last partial block, then the microphone stops
      if (this.node) {
        await new Promise((resolve) => {
          this.flushed = resolve;
          this.node.port.postMessage("flush");
          setTimeout(resolve, 500);
        });
        this.flushed = null;
      }
      this.stopCapture();
    }

    // -- the socket ----------------------------------------------------------------
    connect(minted) {
      if (typeof minted === "string") {
        try { minted = JSON.parse(minted); } catch (e) { minted = null; }
      }
      if (!minted || minted.error || !minted.value) {
        this.stopCapture();
        return this.end((minted && minted.error) || "the live session could not be started");
      }
      // a second Start while a session runs: its secret expires unused
      if (this.ws || (this.state !== "starting" && this.state !== "recording")) return;
      this.language = (minted.session && minted.session.audio && minted.session.audio.input &&
                       minted.session.audio.input.transcription &&
                       minted.session.audio.input.transcription.language) || null;
      const base = new URL(minted.url || "v1/realtime?intent=transcription", document.baseURI);
      base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
      // OpenAI's browser convention: the secret in a subprotocol (a browser cannot set headers)
      const ws = new WebSocket(base.href, ["realtime", "openai-insecure-api-key." + minted.value]);
      this.ws = ws;
      const alerts = minted.compliance;
      ws.onopen = () => {
        // compliance alerts (an extension of the session): asked for before any audio; its
        // session.updated answers a mark like any other (see mark)
        if (alerts) this.mark({type: "transcription", compliance: alerts});
        this.pump();
      };
      ws.onmessage = (e) => {
        let event;
        try { event = JSON.parse(e.data); } catch (err) { return; }
        this.onEvent(event);
      };
      ws.onclose = (e) => {
        if (this.ws !== ws) return;
        this.ws = null;
        if (this.state === "stopping" || this.state === "stopped") return this.wake();
        const why = this.reason || e.reason || `the connection closed (code ${e.code})`;
        this.stopCapture();
        this.end(why);
      };
      this.timer = setInterval(() => { this.pump(); this.render(); }, 250);
    }

    pump() {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      while (this.queued && ws.bufferedAmount < MAX_IN_FLIGHT &&
             this.sent - this.delivered < MAX_UNCONFIRMED) {
        let n = 0;
        const parts = [];
        while (this.queue.length && n < SEND_SAMPLES * 2) {
          const c = this.queue.shift();
          parts.push(c);
          n += c.length;
        }
        const pcm = new Int16Array(n);
        let at = 0;
        for (const p of parts) { pcm.set(p, at); at += p.length; }
        ws.send(JSON.stringify({type: "input_audio_buffer.append", audio: toBase64(pcm)}));
        this.queued -= n;
        this.sent += n;
        if (this.sent - this.markedAt >= MARK_EVERY) this.mark();
      }
      if (!this.queued && this.drained) this.drained();
    }

    mark(session) {
      // A delivery mark: the server answers every session.update with session.updated, in
      // order, after the appends before it, so each answer says how much audio has arrived.
      // (A browser's socket buffers what a slow network cannot take yet without showing it in
      // bufferedAmount, so this is the only honest measure of the backlog.)
      this.ws.send(JSON.stringify({type: "session.update",
                                   session: session || {type: "transcription"}}));
      this.marks.push(this.sent);
      this.markedAt = this.sent;
    }

    backlogSeconds() {
      // captured audio the server has not confirmed: queued here, in the socket, on the way
      return (this.captured - this.delivered) / RATE;
    }

    onEvent(ev) {
      const t = ev.type || "";
      if (t === "session.updated" && this.marks.length) {
        this.delivered = Math.max(this.delivered, this.marks.shift());
        this.pump();                  // room for more
      } else if (t === "input_audio_buffer.speech_started") {
        this.open.add(ev.item_id);
      } else if (t === "conversation.item.input_audio_transcription.delta") {
        this.partials.set(ev.item_id, ev.partial !== undefined ? ev.partial :
                          (this.partials.get(ev.item_id) || "") + (ev.delta || ""));
      } else if (t === "conversation.item.input_audio_transcription.completed") {
        this.partials.delete(ev.item_id);
        this.open.delete(ev.item_id);
        const text = (ev.transcript || "").trim();
        if (text) {
          const f = {item: ev.item_id, start: ev.start, end: ev.end, text};
          for (const k of ["speaker", "language", "words", "segments"]) {
            if (ev[k] !== undefined && ev[k] !== null) f[k] = ev[k];
          }
          this.finals.push(f);
        }
      } else if (t === "compliance.alert" && ev.hit) {
        this.alerts.push({item: ev.item_id, stage: ev.stage, ...ev.hit});
      } else if (t === "conversation.item.input_audio_transcription.failed") {
        this.partials.delete(ev.item_id);
        this.open.delete(ev.item_id);
        this.note = (ev.error && ev.error.message) || "a part of the speech failed";
      } else if (t === "error") {
        const err = ev.error || {};
        if (err.code === "input_audio_buffer_commit_empty") {
          this.commitDone = true;
        } else {
          this.reason = err.message || "the server reported an error";
          this.note = this.reason;
        }
      } else if (t === "input_audio_buffer.committed") {
        if (this.state === "stopping") this.commitDone = true;
        if (!this.finals.some((f) => f.item === ev.item_id)) this.open.add(ev.item_id);
      }
      this.wake();
      this.render();
    }

    wake() {
      const w = this.waiters;
      this.waiters = [];
      w.forEach((f) => f());
    }

    waitFor(cond, ms) {
      const deadline = Date.now() + ms;
      return new Promise((resolve) => {
        const check = () => {
          if (cond() || Date.now() > deadline) return resolve(cond());
          this.waiters.push(check);
          setTimeout(check, 200);
        };
        check();
      });
    }

    // -- stop: everything captured is sent, the open utterance ends, its final arrives ------
    async stop() {
      if (this.state === "starting" || this.state === "recording") {
        this.state = "stopping";
        this.render();
        await this.flushCapture();
        if (this.ws) {
          await this.waitFor(() => !this.ws || (this.ws.readyState === WebSocket.OPEN &&
                                                !this.queued && !this.ws.bufferedAmount),
                             FINISH_TIMEOUT_MS);
          if (this.ws && this.ws.readyState === WebSocket.OPEN) {
            // everything sent has arrived (the network may be slow: the status says how much
            // is still on its way)
            this.mark();
            await this.waitFor(() => !this.ws || this.delivered >= this.sent, FINISH_TIMEOUT_MS);
          }
          if (this.ws && this.ws.readyState === WebSocket.OPEN) {
            // answered by "committed" (then its final comes) or "nothing to commit"
            this.commitDone = false;
            this.ws.send(JSON.stringify({type: "input_audio_buffer.commit"}));
            await this.waitFor(() => !this.ws || (this.commitDone && this.open.size === 0),
                               FINISH_TIMEOUT_MS);
          }
        }
        if (this.ws) try { this.ws.close(1000, "stopped"); } catch (e) { /* closed */ }
        clearInterval(this.timer);
        this.state = this.queued ? "ended" : "stopped";
        if (this.queued) this.reason = `${(this.queued / RATE).toFixed(1)} s of audio could ` +
                                       "not be sent before the connection closed";
      }
      this.render();
      return JSON.stringify(this.transcript());
    }

    end(reason) {
      clearInterval(this.timer);
      this.state = "ended";
      this.reason = reason;
      this.render();
    }

    transcript() {
      return {duration: this.captured / RATE, sent: this.sent / RATE,
              language: this.language, segments: this.finals.map((f) => {
                const s = {start: f.start, end: f.end, text: f.text};
                for (const k of ["speaker", "language", "words"]) if (k in f) s[k] = f[k];
                return s;
              })};
    }

    // -- what the tab shows --------------------------------------------------------------
    render() {
      const status = $("live-status");
      if (!status) return;
      const n = this.finals.length;
      const utt = `${n} utterance${n === 1 ? "" : "s"}`;
      const secs = clock(this.captured / RATE);
      let text;
      if (this.state === "idle") text = "ready · press Start and speak";
      else if (this.state === "starting") text = "● starting the microphone…";
      else if (this.state === "recording") {
        const connected = this.ws && this.ws.readyState === WebSocket.OPEN;
        text = `● recording · ${secs} · ${utt}` + (connected ? "" : " · connecting (the audio waits)");
        const backlog = this.backlogSeconds();
        if (connected && backlog > SLOW_AFTER_S + MARK_EVERY / RATE) {
          text += ` · network slow: ${backlog.toFixed(1)} s queued, nothing is lost`;
        }
      } else if (this.state === "stopping") {
        const backlog = (this.captured - this.delivered) / RATE;
        text = `finishing · ${secs} · ${utt}` + (backlog > 0.05 ? ` · sending ${backlog.toFixed(1)} s` : "");
      } else if (this.state === "stopped") text = `stopped · ${secs} · ${utt}`;
      else text = `session ended: ${this.reason} · ${secs} · ${utt} kept`;
      if (this.note && this.state !== "ended" && this.note !== this.reason) text += ` · ${this.note}`;
      status.textContent = text;
      status.dataset.state = this.state;
      status.dataset.captured = String(this.captured / RATE);
      status.dataset.sent = String(this.sent / RATE);
      status.dataset.delivered = String(this.delivered / RATE);

      const partial = $("live-partial");
      if (partial) {
        // speech_started shows at once, before the first partial text of the utterance
        const words = [...this.partials.values()].join(" ");
        partial.textContent = words || (this.open.size && this.state !== "stopped" ? "…" : "");
      }
      const list = $("live-finals");
      const shown = `${n}/${this.alerts.length}`;
      if (list && this.shown !== shown) {
        this.shown = shown;
        list.innerHTML = this.finals.map((f) => {
          const extra = [];
          if (f.speaker !== undefined) extra.push(`<span class="live-speaker">${esc(f.speaker)}</span>`);
          if (f.language) extra.push(`<span class="live-lang">${esc(f.language)}</span>`);
          const words = Array.isArray(f.words) ? f.words.map((w) =>
            `<span class="live-word" title="${esc(clock(w.start || 0))}–${esc(clock(w.end || 0))}">` +
            `${esc(w.word || w.text || "")}</span>`).join(" ") : "";
          return `<li data-item="${esc(f.item)}" data-start="${f.start}" data-end="${f.end}">` +
            `<span class="live-time">[${clock(f.start)} → ${clock(f.end)}]</span> ` +
            `${extra.join(" ")} <span class="live-text">${marked(f.text, this.alerts.filter(
              (a) => a.item === f.item))}</span>` +
            (words ? `<div class="live-words">${words}</div>` : "") + "</li>";
        }).join("");
        const alerts = $("live-alerts");
        if (alerts) {
          alerts.innerHTML = this.alerts.map((a) =>
            `<li class="live-alert live-${esc(a.severity || "medium")}" data-item="${esc(a.item)}"` +
            ` data-label="${esc(a.label)}" data-start="${a.start}">` +
            `<span class="live-time">[${clock(a.start || 0)}]</span> ` +
            `<strong class="live-alert-label">${esc(a.label)}</strong> ` +
            `<span class="live-alert-text">${esc(a.text)}</span>` +
            (a.speaker ? ` <span class="live-speaker">${esc(a.speaker)}</span>` : "") +
            (a.severity ? ` <span class="live-severity">${esc(a.severity)}</span>` : "") +
            "</li>").join("");
        }
      }
    }
  }

  // a final's text with its alerts' matched text marked (the first occurrence of each)
  function marked(text, alerts) {
    const spans = [];
    for (const a of alerts) {
      const at = a.text ? text.indexOf(a.text) : -1;
      if (at >= 0 && !spans.some(([s, e]) => at < e && at + a.text.length > s)) {
        spans.push([at, at + a.text.length, a.label]);
      }
    }
    spans.sort((x, y) => x[0] - y[0]);
    let out = "", pos = 0;
    for (const [s, e, label] of spans) {
      out += esc(text.slice(pos, s)) + `<mark class="live-hit" title="${esc(label)}">` +
             esc(text.slice(s, e)) + "</mark>";
      pos = e;
    }
    return out + esc(text.slice(pos));
  }

  window.funasrLive = new LiveClient();
  // the first click anywhere prepares the audio graph (suspended until Start)
  document.addEventListener("pointerdown", () => {
    window.funasrLive.prepare(typeof window.funasrLiveOwnResampler === "number" ?
                              window.funasrLiveOwnResampler : 0);
  }, {capture: true, once: true});
  // the tab closes: the socket closes with it and the server frees the session at once
  window.addEventListener("pagehide", () => {
    const c = window.funasrLive;
    if (c.ws) try { c.ws.close(1001, "page closed"); } catch (e) { /* closed */ }
    c.stopCapture();
  });
})();
