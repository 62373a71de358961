"""Valid sample events (one per type) shared by the unit tests."""

from __future__ import annotations

from router.events import (
    AgentLoggedIn,
    AgentLoggedOut,
    AgentProfileApplied,
    AgentProfileChanged,
    AgentState,
    AgentStateChanged,
    AssignmentOffered,
    AssignmentRescinded,
    BotAction,
    BotReplied,
    Channel,
    ContactArrived,
    ContactClosed,
    ContactCompleted,
    ContactWaitUpdated,
    CustomerCallbackRequested,
    CustomerLeft,
    CustomerMessage,
    DeadLetter,
    Decision,
    Event,
    HumanRequested,
    Language,
    OfferAccepted,
    OfferDeclined,
    RoutingDecision,
    RoutingRequested,
    RoutingRequestedV2,
    Tier,
)

TS = 1_700_000_000_000

SAMPLES: dict[type[Event], Event] = {
    ContactArrived: ContactArrived(
        event_id="ev-1", ts_ms=TS, contact_id="c-1", domain="shop.tmall", customer_id="u:42",
        channel=Channel.VOICE, language=Language.EN, tier=Tier.VIP, text="Where is my parcel?",
    ),
    CustomerMessage: CustomerMessage(
        event_id="ev-2", ts_ms=TS, contact_id="c-1", domain="shop", text="我的快递什么时候到？",
        language=Language.ZH,
    ),
    CustomerLeft: CustomerLeft(event_id="ev-3", ts_ms=TS, contact_id="c-1", domain="shop"),
    HumanRequested: HumanRequested(
        event_id="ev-4", ts_ms=TS, contact_id="c-1", domain="shop", language=Language.EN,
    ),
    BotReplied: BotReplied(
        event_id="ev-5", ts_ms=TS, contact_id="c-1", domain="shop", text="好的",
        intent="logistics", action=BotAction.ANSWERED, language=Language.ZH,
    ),
    ContactClosed: ContactClosed(
        event_id="ev-16", ts_ms=TS, contact_id="c-1", domain="shop", text="会话已结束",
        intent="logistics", reason="silence", language=Language.ZH,
    ),
    RoutingRequested: RoutingRequested(
        event_id="ev-6", ts_ms=TS, contact_id="c-1", domain="shop", channel=Channel.EMAIL,
        language=Language.EN, tier=Tier.VIP, skills={"en": 1, "refunds": 10}, priority=9,
        intent="refund", reason="intent_needs_agent",
    ),
    CustomerCallbackRequested: CustomerCallbackRequested(
        event_id="ev-6d", ts_ms=TS, contact_id="c-2", domain="shop",
        callback_to="tel:+8613800000000",
    ),
    ContactWaitUpdated: ContactWaitUpdated(
        event_id="ev-6c", ts_ms=TS, contact_id="c-2", domain="shop", position=4,
        estimated_wait_s=37, queue="refunds", agents=2,
    ),
    RoutingRequestedV2: RoutingRequestedV2(
        event_id="ev-6b", ts_ms=TS, contact_id="c-2", domain="shop", customer_id="cust-1",
        preferred_agent="a-1", intent="refund",
    ),
    AgentLoggedIn: AgentLoggedIn(
        event_id="ev-7", ts_ms=TS, agent_id="a-1", domain="shop", skills={"zh": 3, "general": 1},
        capacity={"chat": 3, "voice": 0, "email": 32}, ready=False,
    ),
    AgentStateChanged: AgentStateChanged(
        event_id="ev-8", ts_ms=TS, agent_id="a-1", domain="shop", state=AgentState.NOT_READY,
        reason="break",
    ),
    OfferAccepted: OfferAccepted(
        event_id="ev-9", ts_ms=TS, agent_id="a-1", domain="shop", offer_id="o-1", contact_id="c-1",
    ),
    OfferDeclined: OfferDeclined(
        event_id="ev-10", ts_ms=TS, agent_id="a-1", domain="shop", offer_id="o-1",
        contact_id="c-1", reason="busy",
    ),
    ContactCompleted: ContactCompleted(
        event_id="ev-11", ts_ms=TS, agent_id="a-1", domain="shop", contact_id="c-1",
        wrap_up="resolved",
    ),
    AgentLoggedOut: AgentLoggedOut(event_id="ev-12", ts_ms=TS, agent_id="a-1", domain="shop"),
    AssignmentOffered: AssignmentOffered(
        event_id="ev-13", ts_ms=TS, offer_id="o-1", contact_id="c-1", agent_id="a-1",
        domain="shop", channel=Channel.CHAT, expires_at_ms=TS + 20_000, waited_ms=1234,
        priority=3, skills={"zh": 1},
    ),
    AssignmentRescinded: AssignmentRescinded(
        event_id="ev-14", ts_ms=TS, offer_id="o-1", contact_id="c-1", agent_id="a-1",
        domain="shop", reason="customer_left",
    ),
    RoutingDecision: RoutingDecision(
        event_id="ev-15", ts_ms=TS, domain="shop", contact_id="c-1", decision=Decision.OFFERED,
        agent_id="a-1", offer_id="o-1", waited_ms=500, within_target=True, reason="matched",
    ),
    DeadLetter: DeadLetter(
        event_id="dl-0-1-contacts.inbound", ts_ms=TS, reason="invalid_json", detail="bad",
        source_topic="contacts.inbound", source_partition=0, source_offset=1,
        original_b64="e30=", key_b64=None,
    ),
    AgentProfileChanged: AgentProfileChanged(
        event_id="ev-16", ts_ms=TS, agent_id="a-1", domain="shop", skills={"zh": 1, "refunds": 2},
        capacity={"chat": 3}, changed_by="sup-1", reason="peak",
    ),
    AgentProfileApplied: AgentProfileApplied(
        event_id="ev-17", ts_ms=TS, agent_id="a-1", domain="shop", skills={"zh": 1},
        capacity={"chat": 3}, changed_by="cli:ops", logged_in=True, source_event_id="ev-16",
    ),
}
