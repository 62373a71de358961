"""The foundation's bot: a pure keyword classifier over a small e-commerce intent table.

No I/O. Given a customer's text, language and tier it decides: answer and close (contain), or
escalate to a human queue with the skills and priority the question needs. A real classifier
replaces the matching, not this interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from router.events import BotAction, Language, Tier

VIP_PRIORITY_BOOST = 3


@dataclass(frozen=True, slots=True)
class Intent:
    name: str
    containable: bool
    topic_skill: str
    keywords: dict[Language, tuple[str, ...]]
    answers: dict[Language, str] = field(default_factory=dict)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class BotDecision:
    intent: str
    action: BotAction
    reply: str
    skills: dict[str, int]
    priority: int
    reason: str  # why escalated: intent_needs_agent | human_requested | not_understood | ""


_HANDOFF = {
    Language.ZH: "正在为您转接人工客服，请稍候。",
    Language.EN: "Connecting you to an agent, one moment please.",
}

HUMAN_REQUEST_WORDS: dict[Language, tuple[str, ...]] = {
    Language.ZH: ("转人工", "人工客服", "找客服", "真人", "人工服务", "人工"),
    Language.EN: ("human", "real person", "an agent", "live agent", "representative",
                  "talk to someone", "speak to someone"),
}

INTENTS: tuple[Intent, ...] = (
    Intent("order_status", True, "orders",
           {Language.ZH: ("订单状态", "订单", "下单"), Language.EN: ("order status", "my order")},
           {Language.ZH: "您可以在「我的订单」中查看订单的实时状态。",
            Language.EN: "You can see your order's live status under My Orders."}),
    Intent("logistics", True, "logistics",
           {Language.ZH: ("物流", "快递", "发货", "到货", "包裹"),
            Language.EN: ("shipping", "delivery", "tracking", "parcel", "package", "shipped")},
           {Language.ZH: "大促期间包裹通常在48小时内发出，物流详情可在订单页查看。",
            Language.EN: "During the sale parcels ship within 48 hours; tracking is on the "
                         "order page."}),
    Intent("coupon", True, "promotions",
           {Language.ZH: ("优惠券", "满减", "红包", "折扣"),
            Language.EN: ("coupon", "discount", "voucher", "promo code")},
           {Language.ZH: "优惠券在结算页自动抵扣，跨店满减每满300减50。",
            Language.EN: "Coupons apply automatically at checkout."}),
    Intent("invoice", True, "orders",
           {Language.ZH: ("发票", "开票"), Language.EN: ("invoice", "receipt")},
           {Language.ZH: "确认收货后可在订单详情中申请电子发票。",
            Language.EN: "After delivery you can request an e-invoice from the order page."}),
    Intent("presale_deposit", True, "presale",
           {Language.ZH: ("定金", "尾款", "预售"), Language.EN: ("deposit", "pre-sale", "presale",
                                                        "final payment")},
           {Language.ZH: "预售商品需先付定金，尾款在11月11日0点开始支付。",
            Language.EN: "Pre-sale items take a deposit; the final payment opens at midnight "
                         "on 11 November."}),
    Intent("refund", False, "refunds",
           {Language.ZH: ("退款", "退货", "退钱", "换货"),
            Language.EN: ("refund", "return", "money back", "exchange")}),
    Intent("payment_failed", False, "payments",
           {Language.ZH: ("支付失败", "付不了款", "扣款", "付款失败"),
            Language.EN: ("payment failed", "card declined", "charged twice", "payment error")}),
    Intent("account_security", False, "security",
           {Language.ZH: ("账号被盗", "盗号", "异常登录", "密码"),
            Language.EN: ("hacked", "password", "suspicious login", "account locked")},
           priority=2),
    Intent("complaint", False, "complaints",
           {Language.ZH: ("投诉", "差评", "太差", "骗子"),
            Language.EN: ("complaint", "complain", "terrible", "scam", "worst")},
           priority=1),
)
GENERAL_SKILL = "general"


# Intents a person must handle are matched first: "I want a refund for my order" is a refund,
# not an order-status question the bot may close.
_MATCH_ORDER = tuple(sorted(INTENTS, key=lambda i: i.containable))


def _contains_any(text: str, words: tuple[str, ...], language: Language) -> bool:
    if language == Language.EN:  # whole words: "humane" is not "human"
        return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)
    return any(w in text for w in words)


def classify(text: str, language: Language) -> Intent | None:
    """The first intent (hand-offs before answers) whose keywords appear in the text."""
    lowered = text.lower()
    for intent in _MATCH_ORDER:
        if _contains_any(lowered, intent.keywords.get(language, ()), language):
            return intent
    return None


def decide(text: str, language: Language, tier: Tier = Tier.NORMAL) -> BotDecision:
    """Contain or escalate one customer message."""
    boost = VIP_PRIORITY_BOOST if tier == Tier.VIP else 0
    if _contains_any(text.lower(), HUMAN_REQUEST_WORDS[language], language):
        return _escalate("human_request", GENERAL_SKILL, language, boost, "human_requested")
    intent = classify(text, language)
    if intent is None:
        return _escalate("unknown", GENERAL_SKILL, language, boost, "not_understood")
    if intent.containable:
        return BotDecision(intent.name, BotAction.ANSWERED, intent.answers[language], {}, 0, "")
    return _escalate(intent.name, intent.topic_skill, language, intent.priority + boost,
                     "intent_needs_agent")


def escalation(language: Language, tier: Tier, reason: str) -> BotDecision:
    """A hand-off the customer asked for explicitly (button or follow-up message)."""
    boost = VIP_PRIORITY_BOOST if tier == Tier.VIP else 0
    return _escalate("human_request", GENERAL_SKILL, language, boost, reason)


def _escalate(intent: str, skill: str, language: Language, priority: int,
              reason: str) -> BotDecision:
    return BotDecision(intent, BotAction.ESCALATED, _HANDOFF[language],
                       {language.value: 1, skill: 1}, min(priority, 9), reason)
