// Text of the desktop and the console in English and Chinese; the switch is remembered.
const TEXT = {
  en: {
    brand: "peakroute", desktop: "Agent desktop", console: "Supervisor console",
    lang_switch: "中文", sign_in: "Sign in", token_label: "Sign-in token",
    token_hint: "Paste the token from your supervisor (peakroute agents token ID).",
    connecting: "Connecting…", connected: "Connected", disconnected: "Disconnected — retrying",
    state: "State", ready: "Ready", not_ready: "Not ready", offline: "Offline", logout: "Log out",
    reason: "Reason", r_break: "Break", r_lunch: "Lunch", r_training: "Training",
    r_meeting: "Meeting", offer: "Incoming contact", accept: "Accept", decline: "Decline",
    d_busy: "Busy", d_wrong_skill: "Wrong skill", d_other: "Other",
    expires_in: "expires in", queue: "Queue", channel: "Channel", intent: "Intent",
    language: "Language", priority: "Priority", vip: "VIP", waited: "Waited",
    preferred: "Your customer", callback: "Call back",
    conversation: "Conversation with the bot", no_conversation: "No bot conversation.",
    customer: "Customer", bot: "Bot", active: "Active contacts", none_active: "No active contacts.",
    capacity_used: "Capacity used", complete: "Complete", wrap_up: "Wrap-up",
    w_resolved: "Resolved", w_follow_up: "Follow-up needed", w_escalated: "Escalated",
    w_no_response: "Customer did not respond", since: "since",
    figures: "My figures today", f_offered: "Offered", f_answered: "Answered",
    f_within_target: "Within target", f_declined: "Declined", f_missed: "Missed",
    f_completed: "Completed", skills: "Skills", queues: "Queues",
    keys: "Keys: R ready · N not ready · A accept · D decline · C complete first contact",
    waiting_offers: "Waiting for contacts…", not_ready_hint: "Go ready to receive contacts.",
    queues_title: "Queues", agents_title: "Agents", service_level: "Service level",
    target: "Target", waiting: "Waiting", oldest: "Oldest wait", at_risk: "At risk",
    answered: "Answered", abandoned: "Abandoned", agent: "Agent", name: "Name",
    load: "Load", desktop_on: "Desktop", actions: "Actions", save: "Save skills",
    set_not_ready: "Not ready", force_logout: "Log out", live: "Live", updated: "updated",
    since_start: "service level, answered and abandoned: today (the SLA day, as peakroute status and /metrics count them)",
    rating: "Service rating", unrated: "unrated, too few contacts", contacts: "contacts",
    supervisor_only: "This console needs a supervisor token.",
    saved: "Saved: takes effect at the next match", changed_by: "changed by",
    profile_changed: "Your skills changed", rescinded: "Offer withdrawn",
    assigned: "Contact assigned", err: "Error",
  },
  zh: {
    brand: "peakroute", desktop: "坐席工作台", console: "班长监控台",
    lang_switch: "English", sign_in: "登录", token_label: "登录令牌",
    token_hint: "粘贴班长发给你的令牌（peakroute agents token ID）。",
    connecting: "连接中…", connected: "已连接", disconnected: "连接断开，正在重试",
    state: "状态", ready: "就绪", not_ready: "未就绪", offline: "离线", logout: "退出",
    reason: "原因", r_break: "休息", r_lunch: "用餐", r_training: "培训", r_meeting: "会议",
    offer: "新会话", accept: "接受", decline: "拒绝",
    d_busy: "忙碌", d_wrong_skill: "技能不符", d_other: "其他",
    expires_in: "剩余", queue: "队列", channel: "渠道", intent: "意图", language: "语言",
    priority: "优先级", vip: "VIP", waited: "已等待", preferred: "您的客户", callback: "回拨",
    conversation: "机器人对话记录", no_conversation: "没有机器人对话。",
    customer: "客户", bot: "机器人", active: "进行中的会话", none_active: "没有进行中的会话。",
    capacity_used: "已用容量", complete: "结束", wrap_up: "小结",
    w_resolved: "已解决", w_follow_up: "需跟进", w_escalated: "已升级", w_no_response: "客户未回复",
    since: "开始于",
    figures: "我的今日数据", f_offered: "分配", f_answered: "接起", f_within_target: "达标",
    f_declined: "拒绝", f_missed: "未应答", f_completed: "完成", skills: "技能", queues: "队列",
    keys: "快捷键：R 就绪 · N 未就绪 · A 接受 · D 拒绝 · C 结束第一个会话",
    waiting_offers: "等待新会话…", not_ready_hint: "切换为就绪以接收会话。",
    queues_title: "队列", agents_title: "坐席", service_level: "服务水平", target: "目标",
    waiting: "排队", oldest: "最长等待", at_risk: "风险", answered: "接起", abandoned: "放弃",
    agent: "坐席", name: "姓名", load: "负载", desktop_on: "工作台", actions: "操作",
    save: "保存技能", set_not_ready: "设为未就绪", force_logout: "强制退出", live: "实时",
    updated: "更新于", since_start: "服务水平、接起与放弃：今日（与 peakroute status 和 /metrics 同一口径）",
    rating: "服务评级", unrated: "未评级，接待量不足", contacts: "次接待",
    supervisor_only: "监控台需要班长令牌。", saved: "已保存：下一次分配即生效",
    changed_by: "修改人", profile_changed: "你的技能已更新", rescinded: "会话已撤回",
    assigned: "会话已分配", err: "错误",
  },
};

let lang = localStorage.getItem("peakroute.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");

export function t(key) { return (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key; }
export function currentLang() { return lang; }

export function applyText(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}

export function toggleLang(rerender) {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("peakroute.lang", lang);
  applyText();
  if (rerender) rerender();
}
