// The agent desktop: state, offers with context and a countdown, active contacts with
// wrap-up, and the agent's own figures. Frames: docs/AGENT_PROTOCOL.md.
import { t, applyText, toggleLang } from "/static/i18n.js";
import { Connection, takeToken, el, fmtSeconds, toast } from "/static/client.js";

const KEY = "peakroute.agent.token";
const $ = (id) => document.getElementById(id);
const model = { me: null, state: "offline", offers: new Map(), active: new Map(), load: {}, capacity: {}, stats: {}, skew: 0 };
let conn = null;

function render() {
  applyText();
  if (!model.me) return;
  $("who").textContent = `${model.me.name || model.me.agent_id} · ${model.me.agent_id}`;
  const badge = $("state-badge");
  badge.textContent = t(model.state); badge.className = `badge st-${model.state}`;
  $("go-ready").disabled = model.state === "ready";
  $("go-not-ready").disabled = model.state === "not_ready";
  $("profile").textContent = `${t("skills")}: ${Object.entries(model.me.skills || {}).map(([k, v]) => `${k}=${v}`).join(", ")} · ${t("queues")}: ${(model.me.queues || []).join(", ")}`;
  renderOffers(); renderActive(); renderFigures();
}

function renderOffers() {
  const box = $("offers"); box.replaceChildren();
  for (const o of model.offers.values()) {
    const c = o.context || {};
    const transcript = (c.transcript || []).length
      ? el("ol", { class: "transcript" }, c.transcript.map((turn) => el("li", { class: `turn ${turn.speaker}` }, el("b", {}, `${t(turn.speaker)}: `), turn.text)))
      : el("p", { class: "hint" }, t("no_conversation"));
    const card = el("article", { class: "offer", "data-testid": "offer", "data-offer-id": o.offer_id, tabindex: "-1" },
      el("div", { class: "offer-head" },
        el("strong", {}, o.queue || "—"), c.vip ? el("span", { class: "badge vip" }, t("vip")) : null,
        o.preferred ? el("span", { class: "badge preferred", "data-testid": "preferred" }, t("preferred")) : null,
        o.callback_to ? el("span", { class: "badge callback", "data-testid": "callback" }, `${t("callback")}: ${o.callback_to}`) : null,
        el("span", { class: "countdown", "data-expires": o.expires_at, role: "timer" }, "")),
      el("div", { class: "bar" }, el("div", { class: "bar-fill", "data-expires": o.expires_at, "data-total": o.total_ms })),
      el("dl", { class: "facts" },
        el("dt", {}, t("intent")), el("dd", {}, c.intent || "—"),
        el("dt", {}, t("language")), el("dd", {}, c.language || "—"),
        el("dt", {}, t("channel")), el("dd", {}, o.channel),
        el("dt", {}, t("priority")), el("dd", {}, String(c.priority ?? 0)),
        el("dt", {}, t("waited")), el("dd", { class: "waited", "data-since": o.waited_since }, "")),
      el("details", { open: true }, el("summary", {}, t("conversation")), transcript),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "primary", "data-testid": "accept", onclick: () => accept(o.offer_id) }, t("accept")),
        el("select", { class: "decline-reason", "aria-label": t("reason") },
          ["busy", "wrong_skill", "other"].map((r) => el("option", { value: r }, t(`d_${r}`)))),
        el("button", { type: "button", "data-testid": "decline", onclick: (ev) => decline(o.offer_id, ev.target.previousSibling.value) }, t("decline"))));
    box.append(card);
  }
  $("no-offer").textContent = model.offers.size ? "" : (model.state === "ready" ? t("waiting_offers") : t("not_ready_hint"));
  tick();
}

function renderActive() {
  const list = $("active"); list.replaceChildren();
  for (const a of model.active.values()) {
    list.append(el("li", { class: "active-contact", "data-testid": "active-contact", "data-contact-id": a.contact_id },
      el("div", {}, el("strong", {}, a.contact_id), " · ", a.queue || "", " · ", el("span", { class: "elapsed", "data-since": a.since }, "")),
      el("div", { class: "actions" },
        el("label", {}, el("span", { class: "sr-only" }, t("wrap_up")),
          el("select", { class: "wrap-up", "aria-label": t("wrap_up") },
            ["resolved", "follow_up", "escalated", "no_response"].map((w) => el("option", { value: w }, t(`w_${w}`))))),
        el("button", { type: "button", class: "primary", "data-testid": "complete", onclick: (ev) => complete(a.contact_id, ev.target.closest("li").querySelector(".wrap-up").value) }, t("complete")))));
  }
  $("none-active").hidden = model.active.size > 0;
  const caps = Object.entries(model.capacity || {}).filter(([, n]) => n > 0);
  $("capacity").textContent = caps.length ? `· ${t("capacity_used")} ${caps.map(([ch, n]) => `${ch} ${model.load[ch] || 0}/${n}`).join(", ")}` : "";
  tick();
}

function renderFigures() {
  const dl = $("figures"); dl.replaceChildren();
  for (const f of ["offered", "answered", "within_target", "declined", "missed", "completed"]) {
    dl.append(el("div", { class: "figure" }, el("dt", {}, t(`f_${f}`)), el("dd", { "data-figure": f }, String(model.stats[f] || 0))));
  }
}

function tick() {
  const now = Date.now() + model.skew;
  for (const node of document.querySelectorAll(".countdown")) node.textContent = `${t("expires_in")} ${fmtSeconds(Number(node.dataset.expires) - now)}`;
  for (const node of document.querySelectorAll(".bar-fill")) {
    const left = Math.max(0, Number(node.dataset.expires) - now);
    node.style.width = `${Math.min(100, (100 * left) / Math.max(1, Number(node.dataset.total)))}%`;
  }
  for (const node of document.querySelectorAll(".waited, .elapsed")) node.textContent = fmtSeconds(now - Number(node.dataset.since));
  for (const [id, o] of model.offers) if (o.expires_at < now - 2000) { model.offers.delete(id); renderOffers(); break; }
}

function send(frame) { if (!conn || !conn.send(frame)) toast(t("disconnected"), "error"); }
function setState(state, reason = "") { send({ type: "state", state, reason }); }
function accept(id) { send({ type: "accept", offer_id: id }); }
function decline(id, reason) { send({ type: "decline", offer_id: id, reason }); }
function complete(id, wrap) { send({ type: "complete", contact_id: id, wrap_up: wrap }); }

function onFrame(f) {
  switch (f.type) {
    case "welcome":
      model.me = f; model.state = f.state; model.load = f.load || {}; model.capacity = f.capacity || {};
      model.stats = f.stats || {}; model.skew = (f.server_time_ms || Date.now()) - Date.now();
      model.offers.clear(); model.active.clear();
      for (const a of f.active || []) model.active.set(a.contact_id, a);
      $("signin").hidden = true; $("desk").hidden = false; render(); break;
    case "offer": {
      const now = Date.now() + model.skew;
      model.offers.set(f.offer_id, { ...f, total_ms: Math.max(1, f.expires_at - now), waited_since: now - (f.context?.waited_ms || 0) });
      renderOffers();
      const btn = document.querySelector(`[data-offer-id="${f.offer_id}"] [data-testid="accept"]`);
      if (btn) btn.focus();
      break;
    }
    case "rescind": model.offers.delete(f.offer_id); renderOffers(); toast(`${t("rescinded")}: ${f.reason}`); break;
    case "assigned":
      model.offers.delete(f.offer_id); model.active.set(f.contact_id, f);
      renderOffers(); renderActive(); toast(`${t("assigned")}: ${f.contact_id}`); break;
    case "completed": model.active.delete(f.contact_id); renderActive(); break;
    case "state": model.state = f.state; render(); break;
    case "load": model.load = f.load; model.capacity = f.capacity; renderActive(); break;
    case "stats": model.stats = f; renderFigures(); break;
    case "profile":
      if (model.me) { model.me.skills = f.skills; model.me.queues = f.queues; model.capacity = f.capacity || model.capacity; }
      render(); if (f.changed_by) toast(`${t("profile_changed")} (${t("changed_by")} ${f.changed_by})`); break;
    case "error": toast(`${t("err")}: ${f.message}`, "error"); break;
    default: break;
  }
}

function onStatus(status, code) {
  const node = $("conn");
  node.textContent = status === "refused" ? `${t("disconnected")} (${code})` : t(status);
  node.className = `status ${status}`;
  if (status === "refused") { sessionStorage.removeItem(KEY); $("desk").hidden = true; $("signin").hidden = false; }
}

function start(token) { if (conn) conn.close(); conn = new Connection(token, onFrame, onStatus, KEY); }

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ["INPUT", "TEXTAREA", "SELECT"].includes(ev.target.tagName) || !model.me) return;
  const first = model.offers.values().next().value;
  const key = ev.key.toLowerCase();
  if (key === "r") setState("ready");
  else if (key === "n") setState("not_ready", $("nr-reason").value);
  else if (key === "a" && first) accept(first.offer_id);
  else if (key === "d" && first) decline(first.offer_id, "busy");
  else if (key === "c" && model.active.size) complete(model.active.keys().next().value, "resolved");
  else return;
  ev.preventDefault();
});

$("lang").addEventListener("click", () => toggleLang(render));
$("go-ready").addEventListener("click", () => setState("ready"));
$("go-not-ready").addEventListener("click", () => setState("not_ready", $("nr-reason").value));
$("go-logout").addEventListener("click", () => setState("logout"));
$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  sessionStorage.setItem(KEY, token); start(token);
});
setInterval(tick, 250);
applyText();
const token = takeToken(KEY);
if (token) start(token); else { $("signin").hidden = false; onStatus("disconnected"); }
