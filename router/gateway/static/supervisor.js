// The supervisor console: queues (service level against target, waiting, oldest wait, at
// risk) and agents (state, load, skills) pushed live; change skills, set not ready, log out.
import { t, applyText, toggleLang } from "/static/i18n.js";
import { Connection, takeToken, el, fmtSeconds, toast } from "/static/client.js";

const KEY = "peakroute.supervisor.token";
const $ = (id) => document.getElementById(id);
let conn = null, me = null, last = null;
const editing = new Map(); // agent id -> skills text being edited (kept across pushes)

const levels = (m) => Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join(",");

function parseLevels(text) {
  const out = {};
  for (const part of text.split(/[,;\s]+/).filter(Boolean)) {
    const [name, level] = part.split("=");
    if (!name || !/^\d+$/.test(level || "")) throw new Error(part);
    out[name.trim()] = Number(level);
  }
  return out;
}

function render() {
  applyText();
  if (!last) return;
  $("live").textContent = `● ${t("live")} · ${t("updated")} ${new Date(last.ts_ms).toLocaleTimeString()}`;
  const r = last.rating; // the domain's service rating (peakroute rating)
  $("rating").textContent = !r ? "" : r.score === null
    ? `${t("rating")}: ${t("unrated")} (${r.contacts} ${t("contacts")}, ${r.window})`
    : `${t("rating")}: ${r.tier} ${r.score.toFixed(1)} / 100 (${r.window})`;
  $("rating").className = `rating tier-${r ? r.tier : ""}`;
  const qs = $("queues"); qs.replaceChildren();
  for (const q of last.queues) {
    const sl = q.service_level;
    const objective = last.objective ?? 0.8;
    const cls = sl === null ? "" : sl >= objective ? "good" : sl >= objective - 0.2 ? "warn" : "bad";
    qs.append(el("tr", { "data-queue": q.queue },
      el("td", {}, q.queue),
      el("td", { class: `sl ${cls}` }, sl === null ? "—" : `${(sl * 100).toFixed(1)} %`),
      el("td", {}, `${q.target_s} s`),
      el("td", { class: q.waiting ? "warn" : "" }, String(q.waiting)),
      el("td", { class: q.oldest_wait_ms > q.target_s * 1000 ? "bad" : "" }, q.waiting ? fmtSeconds(q.oldest_wait_ms) : "—"),
      el("td", { class: q.at_risk ? "bad" : "" }, String(q.at_risk)),
      el("td", {}, String(q.answered)), el("td", {}, String(q.abandoned))));
  }
  const counts = { ready: 0, not_ready: 0, offline: 0 };
  for (const a of last.agents) counts[a.state] = (counts[a.state] || 0) + 1;
  $("agent-counts").textContent = ["ready", "not_ready", "offline"].map((s) => `${t(s)} ${counts[s] || 0}`).join(" · ");
  const body = $("agents");
  const focused = document.activeElement && document.activeElement.dataset.agent;
  body.replaceChildren();
  for (const a of last.agents) {
    const caps = Object.entries(a.capacity || {}).filter(([, n]) => n > 0);
    const input = el("input", { type: "text", class: "skills-input", value: editing.get(a.agent_id) ?? levels(a.skills && Object.keys(a.skills).length ? a.skills : a.roster_skills),
      "aria-label": `${t("skills")} ${a.agent_id}`, "data-agent": a.agent_id, "data-testid": `skills-${a.agent_id}`,
      oninput: (ev) => editing.set(a.agent_id, ev.target.value),
      onkeydown: (ev) => { if (ev.key === "Enter") save(a.agent_id, ev.target.value); } });
    body.append(el("tr", { "data-agent-row": a.agent_id },
      el("td", {}, el("strong", {}, a.name || a.agent_id), a.name ? el("div", { class: "hint" }, a.agent_id) : null,
        a.desktop ? el("div", {}, el("span", { class: "badge desk" }, t("desktop_on"))) : null),
      el("td", {}, el("span", { class: `badge st-${a.state}` }, t(a.state))),
      el("td", {}, caps.map(([ch, n]) => `${ch} ${a.load[ch] || 0}/${n}`).join(", ") || "—"),
      el("td", {}, input),
      el("td", {}, (a.queues || []).join(", ")),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "primary", "data-testid": `save-${a.agent_id}`, onclick: () => save(a.agent_id, input.value) }, t("save")),
        el("button", { type: "button", disabled: a.state !== "ready", onclick: () => conn.send({ type: "set_agent_state", agent_id: a.agent_id, state: "not_ready", reason: `by ${me.agent_id}` }) }, t("set_not_ready")),
        el("button", { type: "button", class: "ghost", disabled: a.state === "offline", onclick: () => conn.send({ type: "set_agent_state", agent_id: a.agent_id, state: "logout" }) }, t("force_logout")))));
    if (focused === a.agent_id) input.focus();
  }
}

function save(agentId, text) {
  let skills;
  try { skills = parseLevels(text); } catch (e) { toast(`${t("err")}: ${e.message}`, "error"); return; }
  conn.send({ type: "set_profile", agent_id: agentId, skills, reason: "console" });
  editing.delete(agentId);
}

function onFrame(f) {
  if (f.type === "welcome") {
    if (f.role !== "supervisor") { conn.close(); onStatus("refused"); $("refused").textContent = t("supervisor_only"); return; }
    me = f; $("who").textContent = `${f.agent_id} · ${f.domain}`;
    $("signin").hidden = true; $("console").hidden = false; applyText();
  } else if (f.type === "console") { last = f; render(); }
  else if (f.type === "ack" && f.of === "set_profile") toast(t("saved"));
  else if (f.type === "error") toast(`${t("err")}: ${f.message}`, "error");
}

function onStatus(status, code) {
  $("conn").textContent = status === "refused" ? `${t("disconnected")}${code ? ` (${code})` : ""}` : t(status);
  $("conn").className = `status ${status}`;
  if (status === "refused") { sessionStorage.removeItem(KEY); $("console").hidden = true; $("signin").hidden = false; }
}

function start(token) { if (conn) conn.close(); conn = new Connection(token, onFrame, onStatus, KEY); }
$("lang").addEventListener("click", () => toggleLang(render));
$("signin-form").addEventListener("submit", (ev) => { ev.preventDefault(); const tok = $("token").value.trim(); sessionStorage.setItem(KEY, tok); start(tok); });
applyText();
const token = takeToken(KEY);
if (token) start(token); else { $("signin").hidden = false; onStatus("disconnected"); }
