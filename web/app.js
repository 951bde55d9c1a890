// The wgllm chat page: a websocket client for the server's /ws protocol (see
// package web's doc comment), or, in the "in this browser" mode, the same
// runtime built for WebAssembly (wasm/wgllm.wasm, loaded on demand) running
// the model on the browser's WebGPU. Model text is only ever put into the
// page as text nodes (renderMarkdown builds elements; nothing here parses
// HTML).
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const ui = {
    messages: $('messages'),
    empty: $('empty-state'),
    modelName: $('model-name'),
    connDot: $('conn-dot'),
    banner: $('conn-banner'),
    bannerText: $('conn-text'),
    retryNow: $('retry-now'),
    statSpeed: $('stat-speed'),
    statTTFT: $('stat-ttft'),
    composer: $('composer'),
    prompt: $('prompt'),
    send: $('send'),
    stop: $('stop'),
    newChat: $('new-chat'),
    openSettings: $('open-settings'),
    dialog: $('settings'),
    settingsForm: $('settings-form'),
    setSystem: $('set-system'),
    setTemperature: $('set-temperature'),
    setMaxTokens: $('set-max-tokens'),
    setAPIKey: $('set-api-key'),
    settingsError: $('settings-error'),
    settingsCancel: $('settings-cancel'),
    mode: $('mode'),
    localPanel: $('local-panel'),
    localStatus: $('local-status'),
    localProgress: $('local-progress'),
    localActions: $('local-actions'),
    localDownload: $('local-download'),
    localFile: $('local-file'),
  };

  // ---- settings (localStorage) ----

  const SETTINGS_KEY = 'wgllm.chat.settings';
  const DEFAULTS = Object.freeze({ system: '', temperature: 0.8, maxTokens: 256, apiKey: '' });
  // The most max tokens the page offers: the server's limit once /props
  // has told it (loadLimits), at most the model's context.
  let maxTokensLimit = 32768;

  function cleanSettings(raw) {
    const s = Object.assign({}, DEFAULTS);
    if (!raw || typeof raw !== 'object') return s;
    if (typeof raw.system === 'string') s.system = raw.system;
    const t = Number(raw.temperature);
    if (Number.isFinite(t) && t >= 0 && t <= 2) s.temperature = t;
    const n = Number(raw.maxTokens);
    if (Number.isInteger(n) && n >= 1 && n <= maxTokensLimit) s.maxTokens = n;
    if (typeof raw.apiKey === 'string') s.apiKey = raw.apiKey.trim();
    return s;
  }

  function loadSettings() {
    try {
      return cleanSettings(JSON.parse(localStorage.getItem(SETTINGS_KEY) || 'null'));
    } catch (e) {
      return cleanSettings(null);
    }
  }

  function storeSettings(s) {
    try {
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(s));
      return true;
    } catch (e) {
      return false; // storage disabled or full: the settings still apply to this tab
    }
  }

  let settings = loadSettings();

  // ---- connection ----

  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  let socket = null;
  let connected = false;
  let failedAttempts = 0;
  let retryTimer = 0;
  let countdownTimer = 0;
  let retryAt = 0;
  let modelName = '';
  let openedWithSettings = false; // a connection opened since the API key last changed

  function socketURL() {
    // Relative to the page, so a reverse proxy may mount the app under a prefix.
    const url = new URL('ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.hash = '';
    url.search = '';
    if (settings.apiKey) url.searchParams.set('api_key', settings.apiKey);
    return url.toString();
  }

  function setConnState(state) {
    ui.connDot.dataset.conn = state;
    document.body.dataset.conn = state;
    if (state !== 'open' && !modelName && mode === 'server') ui.modelName.textContent = state === 'connecting' ? 'connecting…' : 'not connected';
    updateControls();
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    retryTimer = countdownTimer = 0;
    let sock;
    try {
      sock = new WebSocket(socketURL());
    } catch (e) {
      scheduleReconnect(false);
      return;
    }
    socket = sock;
    setConnState('connecting');
    if (!ui.banner.hidden) ui.bannerText.textContent = 'Connecting…';
    sock.onopen = () => {
      if (socket !== sock) return;
      connected = true;
      openedWithSettings = true;
      failedAttempts = 0;
      ui.banner.hidden = true;
      setConnState('open');
    };
    sock.onmessage = (ev) => {
      if (socket === sock) handleServerMessage(ev.data);
    };
    sock.onclose = () => {
      if (socket !== sock) return;
      const wasOpen = connected;
      socket = null;
      connected = false;
      if (running && running.mode === 'server') failRunning('connection_lost', 'The connection was lost before the reply finished.');
      scheduleReconnect(wasOpen);
    };
  }

  function scheduleReconnect(wasOpen) {
    const base = Math.min(BACKOFF_FIRST_MS * 2 ** failedAttempts, BACKOFF_MAX_MS);
    failedAttempts++;
    const delay = Math.round(base * (0.8 + 0.4 * Math.random())); // jitter: clients don't retry in lockstep
    retryAt = Date.now() + delay;
    setConnState('closed');
    const reason = wasOpen ? 'Connection lost.' : 'Cannot reach the server.';
    // A server that never accepted us may want an API key; the browser can't
    // tell a refused key from a server that is down.
    const hint = !openedWithSettings && failedAttempts >= 2 ? ' If the server needs an API key, set it in Settings.' : '';
    const show = () => {
      const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      ui.bannerText.textContent = reason + ' Reconnecting in ' + secs + ' s…' + hint;
    };
    show();
    ui.banner.hidden = false;
    countdownTimer = setInterval(show, 250);
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (socket) {
      const old = socket;
      socket = null;
      connected = false;
      old.close();
      if (running && running.mode === 'server') failRunning('connection_lost', 'The connection was restarted.');
    }
    failedAttempts = 0;
    connect();
  }

  function sendJSON(msg) {
    if (!socket || !connected) return false;
    socket.send(JSON.stringify(msg));
    return true;
  }

  // ---- conversation ----

  // Each entry: {role, content, node, body, meta, excluded}. Excluded turns
  // (failed requests) are shown but not sent back to the model.
  let conversation = [];
  let running = null; // {id, user, reply, text, startedAt, firstTokenAt, cancelTimer}
  let requestSeq = 0;
  let renderQueued = false;

  function addMessage(role, text) {
    ui.empty.hidden = true;
    const node = document.createElement('article');
    node.className = 'msg ' + role;
    const who = document.createElement('div');
    who.className = 'who';
    who.textContent = role === 'user' ? 'You' : (currentModelName() || 'Assistant');
    const body = document.createElement('div');
    body.className = 'body';
    const meta = document.createElement('div');
    meta.className = 'meta';
    node.append(who, body, meta);
    const entry = { role, content: text, node, body, meta, excluded: false };
    if (role === 'user') body.textContent = text;
    conversation.push(entry);
    ui.messages.append(node);
    return entry;
  }

  function nearBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 96;
  }

  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function renderReply(entry, text) {
    const follow = nearBottom();
    entry.body.replaceChildren(window.renderMarkdown(text));
    if (follow) scrollToBottom();
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      if (running) renderReply(running.reply, running.text);
    });
  }

  function setMeta(entry, parts, tag, tagClass) {
    entry.meta.replaceChildren();
    if (tag) {
      const badge = document.createElement('span');
      badge.className = 'tag ' + (tagClass || '');
      badge.textContent = tag;
      entry.meta.append(badge);
    }
    if (parts.length) {
      const span = document.createElement('span');
      span.textContent = parts.join(' · ');
      entry.meta.append(span);
    }
  }

  function fmtRate(perSecond) {
    return (perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1)) + ' tok/s';
  }

  function fmtMs(ms) {
    return ms >= 10000 ? (ms / 1000).toFixed(1) + ' s' : Math.round(ms) + ' ms';
  }

  function num(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  }

  // history is the conversation as the model sees it, ending with text.
  function history(text) {
    const h = [];
    if (settings.system.trim()) h.push({ role: 'system', content: settings.system });
    for (const m of conversation) {
      if (!m.excluded && m.content) h.push({ role: m.role, content: m.content });
    }
    h.push({ role: 'user', content: text });
    return h;
  }

  function sendPrompt() {
    const text = ui.prompt.value;
    if (!text.trim() || running) return;
    if (mode === 'browser') {
      if (local.ready && !local.busy) sendLocal(text);
      return;
    }
    if (!connected) {
      ui.banner.hidden = false;
      ui.banner.classList.remove('flash');
      void ui.banner.offsetWidth; // restart the animation
      ui.banner.classList.add('flash');
      return;
    }
    const id = 'r' + (++requestSeq);
    const sent = sendJSON({
      type: 'chat',
      id,
      messages: history(text),
      temperature: settings.temperature,
      max_tokens: settings.maxTokens,
    });
    if (!sent) return;
    const user = addMessage('user', text);
    const reply = addMessage('assistant', '');
    reply.node.dataset.state = 'streaming';
    reply.node.setAttribute('aria-busy', 'true');
    running = { id, mode: 'server', user, reply, text: '', startedAt: performance.now(), firstTokenAt: 0, cancelTimer: 0 };
    ui.prompt.value = '';
    autosize();
    scrollToBottom();
    updateControls();
  }

  function endRunning() {
    const r = running;
    running = null;
    clearTimeout(r.cancelTimer);
    r.reply.node.removeAttribute('aria-busy');
    updateControls();
    if (document.activeElement === ui.stop || document.activeElement === document.body) ui.prompt.focus();
    return r;
  }

  function finishRunning(msg) {
    const r = endRunning();
    const reply = r.reply;
    const end = performance.now();
    renderReply(reply, r.text);
    reply.content = r.text;
    const reason = typeof msg.finish_reason === 'string' ? msg.finish_reason : 'stop';
    reply.node.dataset.state = reason === 'cancelled' ? 'cancelled' : 'done';
    reply.node.dataset.finish = reason;
    if (!r.text) {
      // Nothing to continue from: keep the exchange out of the next request.
      reply.excluded = r.user.excluded = true;
      const empty = document.createElement('p');
      empty.className = 'placeholder';
      empty.textContent = reason === 'cancelled' ? 'Stopped before any output.' : 'No output.';
      reply.body.replaceChildren(empty);
    }

    const timings = msg.timings && typeof msg.timings === 'object' ? msg.timings : {};
    const usage = msg.usage && typeof msg.usage === 'object' ? msg.usage : {};
    const completion = num(usage.completion_tokens);
    let speed = num(timings.predicted_per_second);
    let ttft = num(timings.ttft_ms);
    if (ttft === undefined && r.firstTokenAt) ttft = r.firstTokenAt - r.startedAt;
    if (speed === undefined && completion && r.firstTokenAt && end > r.firstTokenAt) {
      speed = completion / ((end - r.firstTokenAt) / 1000);
    }
    ui.statSpeed.textContent = speed !== undefined ? fmtRate(speed) : '– tok/s';
    ui.statTTFT.textContent = 'TTFT ' + (ttft !== undefined ? fmtMs(ttft) : '–');

    const parts = [];
    if (completion !== undefined) parts.push(completion + (completion === 1 ? ' token' : ' tokens'));
    if (speed !== undefined) parts.push(fmtRate(speed));
    if (ttft !== undefined) parts.push('TTFT ' + fmtMs(ttft));
    if (reason === 'cancelled') setMeta(reply, parts, 'Stopped', 'tag-stopped');
    else if (reason === 'length') setMeta(reply, parts, 'Max tokens reached', 'tag-length');
    else setMeta(reply, parts);
  }

  function failRunning(code, message) {
    const r = endRunning();
    const reply = r.reply;
    if (r.text) renderReply(reply, r.text);
    reply.node.dataset.state = 'error';
    reply.excluded = r.user.excluded = true;
    const err = document.createElement('p');
    err.className = 'error-text';
    err.setAttribute('role', 'alert');
    err.textContent = message + (code ? ' (' + code + ')' : '');
    reply.body.append(err);
    setMeta(reply, [], 'Error', 'tag-error');
  }

  function stopRunning() {
    if (!running || running.cancelRequested) return;
    running.cancelRequested = true;
    running.reply.node.dataset.state = 'cancelling';
    const r = running;
    if (r.mode === 'browser') {
      // The runtime stops before its next token; its promise ends the reply.
      window.wgllm.cancel();
      updateControls();
      return;
    }
    if (!sendJSON({ type: 'cancel', id: r.id })) {
      finishRunning({ finish_reason: 'cancelled' });
      return;
    }
    // If the server never confirms, don't leave the page stuck.
    r.cancelTimer = setTimeout(() => {
      if (running === r) finishRunning({ finish_reason: 'cancelled' });
    }, 10000);
    updateControls();
  }

  function newChat() {
    if (running) {
      if (running.mode === 'browser') window.wgllm.cancel();
      else sendJSON({ type: 'cancel', id: running.id });
      endRunning();
    }
    conversation = [];
    for (const node of Array.from(ui.messages.children)) {
      if (node !== ui.empty) node.remove();
    }
    ui.empty.hidden = false;
    ui.prompt.focus();
  }

  function showNotice(text) {
    const node = document.createElement('div');
    node.className = 'notice';
    node.setAttribute('role', 'alert');
    node.textContent = text;
    ui.messages.append(node);
    scrollToBottom();
  }

  function handleServerMessage(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (e) {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    const mine = running && msg.id === running.id;
    switch (msg.type) {
      case 'hello':
        modelName = typeof msg.model === 'string' && msg.model ? msg.model : 'unknown model';
        if (mode === 'server') showModelName();
        break;
      case 'token':
        if (!mine || typeof msg.text !== 'string') return;
        if (!running.firstTokenAt) running.firstTokenAt = performance.now();
        running.text += msg.text;
        queueRender();
        break;
      case 'done':
        if (mine) finishRunning(msg);
        break;
      case 'error': {
        const e = msg.error && typeof msg.error === 'object' ? msg.error : {};
        const code = typeof e.code === 'string' ? e.code : '';
        const message = typeof e.message === 'string' && e.message ? e.message : 'The server reported an error.';
        if (mine) failRunning(code, message);
        else if (!msg.id) showNotice('Server error: ' + message + (code ? ' (' + code + ')' : ''));
        break;
      }
    }
  }

  // ---- controls ----

  function updateControls() {
    const busy = !!running;
    ui.send.hidden = busy;
    ui.stop.hidden = !busy;
    ui.stop.disabled = busy && !!running.cancelRequested;
    ui.stop.textContent = busy && running.cancelRequested ? 'Stopping…' : 'Stop';
    ui.send.disabled = mode === 'browser' ? !local.ready || local.busy : !connected;
    ui.mode.disabled = busy || local.loading;
    ui.localActions.hidden = local.loading || local.busy;
    ui.messages.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  function autosize() {
    const p = ui.prompt;
    p.style.height = 'auto';
    p.style.height = Math.min(p.scrollHeight + 2, Math.round(window.innerHeight * 0.4)) + 'px';
  }

  ui.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendPrompt();
  });

  ui.prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && ev.keyCode !== 229) {
      ev.preventDefault();
      sendPrompt();
    } else if (ev.key === 'Escape' && running) {
      ev.preventDefault();
      stopRunning();
    }
  });
  ui.prompt.addEventListener('input', autosize);
  window.addEventListener('resize', autosize);

  ui.stop.addEventListener('click', () => {
    stopRunning();
    ui.prompt.focus();
  });
  ui.newChat.addEventListener('click', newChat);
  ui.retryNow.addEventListener('click', reconnectNow);
  window.addEventListener('online', () => { if (!socket) reconnectNow(); });

  // ---- "in this browser" mode ----

  // mode is where the model runs: 'server' (the websocket) or 'browser'
  // (wasm/wgllm.wasm on this page's WebGPU). The socket stays connected
  // in browser mode, so switching back is immediate.
  let mode = 'server';
  const local = {
    runtime: null, // a promise of window.wgllm, once asked for
    ready: false, // a model is loaded
    loading: false,
    busy: false, // a generation runs (until its promise settles)
    modelName: '',
    adapter: '',
  };

  function currentModelName() {
    return mode === 'browser' ? local.modelName : modelName;
  }

  function showModelName() {
    let name = currentModelName();
    let title = name;
    if (mode === 'browser') {
      name = local.ready ? name + ' · in this browser' : 'in this browser';
      title = local.ready ? local.modelName + ' on ' + local.adapter + ' (WebGPU in this browser)' : 'no model loaded in this browser';
    } else if (!name) {
      name = connected ? 'unknown model' : 'not connected';
    }
    ui.modelName.textContent = name;
    ui.modelName.title = title;
    document.title = (currentModelName() || 'wgllm') + ' · wgllm chat';
  }

  function setLocalStatus(text, progress) {
    ui.localStatus.textContent = text;
    ui.localProgress.hidden = progress === undefined;
    if (progress !== undefined) ui.localProgress.value = Math.max(0, Math.min(1, progress));
  }

  function fmtMB(bytes) {
    return (bytes / (1 << 20)).toFixed(1) + ' MB';
  }

  // errorMessage reads the server's JSON error, else the status line.
  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && typeof body.error.message === 'string') return body.error.message;
    } catch (e) { /* not JSON */ }
    return resp.status + ' ' + resp.statusText;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const el = document.createElement('script');
      el.src = src;
      el.onload = resolve;
      el.onerror = () => reject(new Error('cannot load ' + src));
      document.head.append(el);
    });
  }

  // startRuntime loads Go's loader and the runtime, once.
  function startRuntime() {
    if (local.runtime) return local.runtime;
    local.runtime = (async () => {
      if (!navigator.gpu) throw new Error('This browser has no WebGPU (navigator.gpu); try a recent Chrome, Edge or Safari, or use the server.');
      const resp = await fetch('wasm/wgllm.wasm');
      if (!resp.ok) throw new Error('The browser runtime is not available: ' + await errorMessage(resp));
      await loadScript('wasm/wasm_exec.js');
      const go = new window.Go();
      const ready = new Promise((resolve) => { window.onWgllmReady = resolve; });
      const { instance } = await WebAssembly.instantiateStreaming(resp, go.importObject);
      go.run(instance).then(() => { local.runtime = null; local.ready = false; }); // the runtime never exits on its own
      await ready;
      const a = await window.wgllm.adapter();
      local.adapter = a.name || a.vendor || 'WebGPU';
      return window.wgllm;
    })();
    local.runtime.catch(() => { local.runtime = null; });
    return local.runtime;
  }

  // download fetches url with progress, into one Uint8Array.
  async function download(url, headers, label) {
    const resp = await fetch(url, { headers });
    if (!resp.ok) throw new Error('Downloading the model: ' + await errorMessage(resp));
    const total = Number(resp.headers.get('Content-Length')) || 0;
    const reader = resp.body.getReader();
    const chunks = [];
    let got = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
      setLocalStatus('Downloading ' + label + ': ' + fmtMB(got) + (total ? ' of ' + fmtMB(total) : ''), total ? got / total : undefined);
    }
    const bytes = new Uint8Array(got);
    let off = 0;
    for (const c of chunks) {
      bytes.set(c, off);
      off += c.length;
    }
    return bytes;
  }

  // loadLocal runs getBytes (the model file) and loads it in the runtime.
  async function loadLocal(name, getBytes) {
    if (local.loading || running) return;
    local.loading = true;
    local.ready = false;
    showModelName();
    updateControls();
    try {
      setLocalStatus('Loading the browser runtime…', undefined);
      const wgllm = await startRuntime();
      const bytes = await getBytes();
      setLocalStatus('Loading ' + name + ' on ' + local.adapter + '…', 0);
      const info = await wgllm.load(bytes, {
        onProgress: (done, total) => setLocalStatus('Loading ' + name + ' on ' + local.adapter + '…', total ? done / total : 0),
      });
      local.modelName = name;
      local.ready = true;
      const template = info.chatTemplate === 'model' ? 'its chat template' : info.chatTemplate === 'chatml' ? 'ChatML (the file has no chat template)' : info.chatTemplate;
      setLocalStatus(name + ' runs in this browser on ' + local.adapter + ' (' + info.layers + ' layers, context ' + info.ctxSize + ', ' + template + ').', undefined);
    } catch (e) {
      setLocalStatus(String(e && e.message || e), undefined);
    } finally {
      local.loading = false;
      showModelName();
      updateControls();
    }
  }

  // loadLimits asks the server (/props) for the largest max_tokens it
  // accepts and the model's context, and offers no more.
  async function loadLimits() {
    const headers = settings.apiKey ? { Authorization: 'Bearer ' + settings.apiKey } : {};
    const resp = await fetch('props', { headers }).catch(() => null);
    if (!resp || !resp.ok) return;
    const body = await resp.json().catch(() => ({}));
    const limit = Number(body.max_tokens_limit);
    if (!Number.isInteger(limit) || limit < 1) return;
    maxTokensLimit = limit;
    ui.setMaxTokens.max = String(limit);
    if (settings.maxTokens > limit) settings = Object.assign({}, settings, { maxTokens: Math.min(limit, DEFAULTS.maxTokens) });
  }
  loadLimits();

  // serverModel is the name of the server's default model.
  async function serverModel() {
    if (modelName) return modelName;
    const resp = await fetch('health');
    const body = await resp.json().catch(() => ({}));
    if (typeof body.model !== 'string' || !body.model) throw new Error('The server has no model loaded yet; try again shortly.');
    return body.model;
  }

  function downloadServerModel() {
    serverModel().then((name) => {
      const headers = settings.apiKey ? { Authorization: 'Bearer ' + settings.apiKey } : {};
      loadLocal(name, () => download('v1/models/' + encodeURIComponent(name) + '/file', headers, name));
    }, (e) => setLocalStatus(String(e && e.message || e), undefined));
  }

  function openLocalFile() {
    const file = ui.localFile.files && ui.localFile.files[0];
    ui.localFile.value = '';
    if (!file) return;
    const name = file.name.replace(/\.gguf$/i, '');
    loadLocal(name, async () => {
      setLocalStatus('Reading ' + file.name + ' (' + fmtMB(file.size) + ')…', undefined);
      return new Uint8Array(await file.arrayBuffer());
    });
  }

  function sendLocal(text) {
    const id = 'b' + (++requestSeq);
    const req = { messages: history(text), temperature: settings.temperature, maxTokens: settings.maxTokens };
    const user = addMessage('user', text);
    const reply = addMessage('assistant', '');
    reply.node.dataset.state = 'streaming';
    reply.node.setAttribute('aria-busy', 'true');
    const r = { id, mode: 'browser', user, reply, text: '', startedAt: performance.now(), firstTokenAt: 0, cancelTimer: 0 };
    running = r;
    local.busy = true;
    ui.prompt.value = '';
    autosize();
    scrollToBottom();
    updateControls();
    window.wgllm.generate(req, (piece) => {
      if (running !== r) return; // a new chat dropped this reply
      if (!r.firstTokenAt) r.firstTokenAt = performance.now();
      r.text += piece;
      queueRender();
    }).then((st) => {
      if (running !== r) return;
      const decodeS = st.decodeMs / 1000;
      finishRunning({
        finish_reason: st.finishReason,
        usage: { prompt_tokens: st.promptTokens, completion_tokens: st.completionTokens },
        timings: {
          ttft_ms: r.firstTokenAt ? r.firstTokenAt - r.startedAt : undefined,
          predicted_per_second: st.completionTokens && decodeS > 0 ? st.completionTokens / decodeS : undefined,
        },
      });
    }, (e) => {
      if (running === r) failRunning('', String(e && e.message || e));
    }).finally(() => {
      local.busy = false;
      updateControls();
    });
  }

  function setMode(next) {
    if (running || local.loading) {
      ui.mode.value = mode;
      return;
    }
    mode = next === 'browser' ? 'browser' : 'server';
    document.body.dataset.mode = mode;
    ui.localPanel.hidden = mode !== 'browser';
    if (mode === 'browser' && !local.ready) {
      setLocalStatus(navigator.gpu ? 'Run a model on this browser\'s GPU: download the server\'s model or open a .gguf file.' : 'This browser has no WebGPU (navigator.gpu); use the server.', undefined);
    }
    showModelName();
    updateControls();
  }

  ui.mode.addEventListener('change', () => setMode(ui.mode.value));
  ui.localDownload.addEventListener('click', downloadServerModel);
  ui.localFile.addEventListener('change', openLocalFile);

  // ---- settings dialog ----

  function openSettings() {
    ui.setSystem.value = settings.system;
    ui.setTemperature.value = String(settings.temperature);
    ui.setMaxTokens.value = String(settings.maxTokens);
    ui.setAPIKey.value = settings.apiKey;
    ui.settingsError.hidden = true;
    ui.dialog.showModal();
    ui.setSystem.focus();
  }

  function saveSettings(ev) {
    ev.preventDefault();
    const t = Number(ui.setTemperature.value);
    const n = Number(ui.setMaxTokens.value);
    let problem = '';
    if (ui.setTemperature.value.trim() === '' || !Number.isFinite(t) || t < 0 || t > 2) problem = 'Temperature must be a number from 0 to 2.';
    else if (!Number.isInteger(n) || n < 1 || n > maxTokensLimit) problem = 'Max tokens must be a whole number from 1 to ' + maxTokensLimit + '.';
    if (problem) {
      ui.settingsError.textContent = problem;
      ui.settingsError.hidden = false;
      return;
    }
    const next = cleanSettings({ system: ui.setSystem.value, temperature: t, maxTokens: n, apiKey: ui.setAPIKey.value });
    const keyChanged = next.apiKey !== settings.apiKey;
    settings = next;
    if (!storeSettings(settings)) showNotice('Settings apply to this tab only: the browser refused to store them.');
    ui.dialog.close();
    if (keyChanged) {
      openedWithSettings = false;
      reconnectNow();
    }
  }

  ui.openSettings.addEventListener('click', openSettings);
  ui.settingsForm.addEventListener('submit', saveSettings);
  ui.settingsCancel.addEventListener('click', () => ui.dialog.close());
  ui.dialog.addEventListener('close', () => ui.openSettings.focus());

  ui.mode.value = 'server';
  document.body.dataset.mode = mode;
  updateControls();
  autosize();
  connect();
  ui.prompt.focus();
})();
