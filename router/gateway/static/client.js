// The WebSocket client both pages share: the token from ?token= (then removed from the
// address bar) or the sign-in form, hello, reconnects with backoff, frames to handlers.
export function takeToken(storageKey) {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(storageKey, fromUrl);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(storageKey);
}

// Close codes after which reconnecting with the same token cannot help (docs/AGENT_PROTOCOL.md):
// refused at hello, expired on the socket, no profile or disabled, ended by revocation,
// removal or a supervisor's logout.
const FINAL_CLOSES = new Set([4401, 4402, 4403, 4410]);

export class Connection {
  constructor(token, onFrame, onStatus, storageKey = null) {
    this.token = token; this.onFrame = onFrame; this.onStatus = onStatus;
    this.storageKey = storageKey;
    this.retry = 500; this.stopped = false; this.seq = 0; this.renewTimer = null;
    this.open();
  }
  // Renew before the token expires: an HS256 gateway answers `refresh` with a new token; with an
  // identity provider, the embedding page calls renew(freshToken) (a new hello, same socket).
  scheduleRenewal(expiresAt, serverTimeMs) {
    clearTimeout(this.renewTimer);
    const left = expiresAt - (serverTimeMs || Date.now());
    const lead = Math.min(60000, left / 5);
    this.renewTimer = setTimeout(() => this.send({ type: "refresh" }), Math.max(left - lead, 1000));
  }
  renew(token) { this.token = token; return this.send({ type: "hello", token }); }
  open() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    this.ws = new WebSocket(`${proto}//${location.host}/ws`);
    this.onStatus("connecting");
    this.ws.onopen = () => { this.retry = 500; this.send({ type: "hello", token: this.token }); };
    this.ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (frame.type === "welcome") { this.onStatus("connected"); this.scheduleRenewal(frame.expires_at, frame.server_time_ms); }
      if (frame.type === "renewed") {
        if (frame.token) { this.token = frame.token; if (this.storageKey) sessionStorage.setItem(this.storageKey, frame.token); }
        this.scheduleRenewal(frame.expires_at, null);
      }
      this.onFrame(frame);
    };
    this.ws.onclose = (ev) => {
      clearTimeout(this.renewTimer);
      if (FINAL_CLOSES.has(ev.code)) { this.stopped = true; this.onStatus("refused", ev.code); return; }
      if (this.stopped) return;
      this.onStatus("disconnected");
      setTimeout(() => this.open(), this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }
  send(frame) {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ id: `c${++this.seq}`, ...frame }));
    return true;
  }
  close() { this.stopped = true; clearTimeout(this.renewTimer); this.ws.close(); }
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

export function fmtSeconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = text; box.className = `toast show ${kind}`;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { box.className = "toast"; }, 4000);
}
