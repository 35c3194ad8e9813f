"""The notifier: a scheduled job that sends due users a tip by email (SMTP) or webhook.

A user is due when they consented to notifications, chose a channel, are outside their quiet
hours (wall-clock times in their own timezone, so daylight-saving changes are followed) and got
no notification within ``notify_every_hours``. Serving is asked with ``defer_activation`` and
with the tips sent to the user within the last day excluded, so the same tip is never sent twice
within a day and an undelivered tip is never learned from: the decision is activated (through the
outbox, so an outage of serving only delays it) once a channel delivered it. Every attempt is a
``deliveries`` lake row and updates the app's ``deliveries`` row; a failed attempt is retried
with exponential backoff up to ``notify_max_attempts`` (never inside quiet hours).

Run it with ``python -m app_api.notifier`` (one pass); the ``notifier`` DAG runs that every 5 minutes.
"""

from __future__ import annotations

import logging
import smtplib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app_api import outbound, relay
from app_api.preferences import Purpose, current_consents, in_quiet_hours, profile_of
from app_api.services import Services
from app_api.tables import Delivery, Profile, ServedDecision, aware
from data_contracts import CandidateKind, NotificationDelivery, TipCandidate
from data_contracts.serving import ActivateRequest, RankRequest
from oo.serving_client import ServingError
from oo.tables import User

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """A channel did not take the notification."""


@dataclass
class NotifyReport:
    """What one pass did."""

    considered: int = 0
    decisions: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0


def send_email(services: Services, to: str, tip: TipCandidate, decision_id: str) -> None:
    """Send the tip by SMTP."""
    cfg = services.settings.app
    msg = EmailMessage()
    msg["From"] = cfg.smtp_sender
    msg["To"] = to
    msg["Subject"] = "Your next small step"
    msg["X-OO-Decision"] = decision_id
    msg.set_content(f"{tip.content}\n\nDone, later or not for you? Tell oO: decision {decision_id}\n")
    try:
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.smtp_timeout_s) as smtp:
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"smtp: {type(exc).__name__}: {exc}") from None


def send_webhook(services: Services, url: str, tip: TipCandidate, decision_id: str, delivery_id: str) -> None:
    """POST the tip to the user's webhook; any 2xx is an acknowledgement. Outside local mode the
    URL must reach a public address (:mod:`app_api.outbound`)."""
    if services.settings.env != "local":
        try:
            outbound.check_resolved(url)
        except outbound.NotPublic as exc:
            raise DeliveryFailed(f"webhook: {exc}; not sent") from None
    body = {
        "delivery_id": delivery_id,
        "decision_id": decision_id,
        "tip": {"candidate_id": tip.candidate_id, "kind": tip.kind.value, "content": tip.content},
    }
    try:
        r = services.http.post(url, json=body, headers={"Idempotency-Key": delivery_id})
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"webhook: {type(exc).__name__}") from None
    if not 200 <= r.status_code < 300:
        raise DeliveryFailed(f"webhook: HTTP {r.status_code}")


def _due(session: Session, services: Services, now: datetime) -> list[tuple[User, Profile]]:
    since = now - timedelta(hours=services.settings.app.notify_every_hours)
    recent = select(Delivery.user_id).where(Delivery.created_at > since)
    rows = session.execute(
        select(User, Profile).join(Profile, Profile.user_id == User.id).where(User.id.not_in(recent))
    ).all()
    due = []
    for user, profile in rows:
        if not profile.channels or not current_consents(session, user.id)[Purpose.notifications]:
            continue
        if in_quiet_hours(now, user.timezone, profile.quiet_start, profile.quiet_end):
            continue
        due.append((user, profile))
    return due


def _attempt(
    services: Services,
    session: Session,
    delivery: Delivery,
    user: User,
    profile: Profile,
    tip: TipCandidate,
    now: datetime,
) -> bool:
    cfg = services.settings.app
    delivery.attempts += 1
    try:
        if delivery.channel == "email":
            if not user.email:
                raise DeliveryFailed("the user has no email address")
            send_email(services, user.email, tip, delivery.decision_id)
        elif delivery.channel == "webhook":
            if not profile.webhook_url:
                raise DeliveryFailed("the user has no webhook URL")
            send_webhook(services, profile.webhook_url, tip, delivery.decision_id, delivery.delivery_id)
        else:
            raise DeliveryFailed(f"unknown channel {delivery.channel!r}")
    except DeliveryFailed as exc:
        delivery.error = str(exc)[:1000]
        delivery.status = "failed"
        if delivery.attempts < cfg.notify_max_attempts:
            delivery.next_attempt_at = now + relay.backoff(delivery.attempts, cfg.notify_backoff_initial_s, 86400.0)
        else:
            delivery.next_attempt_at = None
        log.warning(
            "delivery %s (%s) failed, attempt %d: %s", delivery.delivery_id, delivery.channel, delivery.attempts, exc
        )
        ok = False
    else:
        delivery.status, delivery.sent_at, delivery.error, delivery.next_attempt_at = "sent", now, None, None
        if not _activation_queued(session, delivery.decision_id):
            relay.enqueue(
                session,
                relay.SERVING_ACTIVATE,
                f"activate:{delivery.decision_id}",
                user.id,
                ActivateRequest(event_id=uuid.UUID(delivery.decision_id), user_id=user.id),
                now,
            )
        ok = True
    services.lake.write(
        "deliveries",
        [
            NotificationDelivery(
                delivery_id=uuid.UUID(delivery.delivery_id),
                user_id=user.id,
                decision_id=uuid.UUID(delivery.decision_id),
                channel=delivery.channel,
                status=delivery.status,
                attempt=delivery.attempts,
                created_at=aware(delivery.created_at),
                sent_at=now if ok else None,
                error=delivery.error,
            )
        ],
    )
    session.commit()
    return ok


def _activation_queued(session: Session, decision_id: str) -> bool:
    from app_api.tables import OutboxMessage

    session.flush()
    return (
        session.execute(select(OutboxMessage.id).where(OutboxMessage.message_id == f"activate:{decision_id}")).first()
        is not None
    )


def _recent_tips(session: Session, user_id: str, now: datetime) -> list[str]:
    day = now - timedelta(days=1)
    return sorted(
        set(
            session.execute(
                select(Delivery.candidate_id).where(Delivery.user_id == user_id, Delivery.created_at > day)
            ).scalars()
        )
    )


def _tip_of(session: Session, decision_id: str) -> TipCandidate | None:
    served = session.get(ServedDecision, decision_id)
    if served is None:
        return None
    return TipCandidate(candidate_id=served.candidate_id, content=served.content, kind=served.kind, source="served")


def retry_failed(services: Services, session: Session, now: datetime, report: NotifyReport) -> None:
    """Attempt again every failed delivery whose backoff has passed (outside quiet hours)."""
    rows = (
        session.execute(
            select(Delivery).where(
                Delivery.status == "failed", Delivery.next_attempt_at.is_not(None), Delivery.next_attempt_at <= now
            )
        )
        .scalars()
        .all()
    )
    for delivery in rows:
        user = session.get(User, delivery.user_id)
        tip = _tip_of(session, delivery.decision_id)
        if user is None or tip is None:
            continue
        profile = profile_of(session, user.id)
        if in_quiet_hours(now, user.timezone, profile.quiet_start, profile.quiet_end):
            continue
        report.retried += 1
        if _attempt(services, session, delivery, user, profile, tip, now):
            report.sent += 1
        else:
            report.failed += 1


def notify_once(services: Services, now: datetime | None = None) -> NotifyReport:
    """One pass: retry due failures, then notify every due user."""
    now = now or services.clock()
    report = NotifyReport()
    with Session(services.engine, expire_on_commit=False) as session:
        retry_failed(services, session, now, report)
        for user, profile in _due(session, services, now):
            report.considered += 1
            kinds = set(profile.tip_kinds) or {k.value for k in CandidateKind}
            llm_ok = current_consents(session, user.id)[Purpose.llm_tips] and CandidateKind.llm_tip.value in kinds
            request = RankRequest(
                user_id=user.id,
                event_id=uuid.uuid4(),
                defer_activation=True,
                excluded_ids=_recent_tips(session, user.id, now),
                llm_consent=llm_ok,
                include_todoist=CandidateKind.todoist_task.value in kinds,
            )
            try:
                decision = services.serving.rank(request)
            except ServingError as exc:
                log.warning("notifier: serving: %s; the user stays due", exc)
                continue
            tip = decision.chosen
            if tip is None or tip.kind.value not in kinds or (tip.kind is CandidateKind.llm_tip and not llm_ok):
                continue
            report.decisions += 1
            decision_id = str(decision.event_id)
            session.add(
                ServedDecision(
                    decision_id=decision_id, user_id=user.id, candidate_id=tip.candidate_id, kind=tip.kind.value,
                    content=tip.content, via="notify", served_at=now,
                )
            )  # fmt: skip
            for channel in profile.channels:
                delivery = Delivery(
                    delivery_id=str(uuid.uuid4()), user_id=user.id, decision_id=decision_id,
                    candidate_id=tip.candidate_id, channel=channel, status="queued", attempts=0, created_at=now,
                )  # fmt: skip
                session.add(delivery)
                session.flush()
                if _attempt(services, session, delivery, user, profile, tip, now):
                    report.sent += 1
                else:
                    report.failed += 1
    return report


def main() -> None:
    """One notifier pass on the process settings (``python -m app_api.notifier``)."""
    from app_api.services import build
    from oo.runtime import configure
    from oo.settings import get_settings

    configure()
    services = build(get_settings())
    try:
        report = notify_once(services)
        log.info("notifier: %s", report)
        print(report)  # noqa: T201
    finally:
        services.close()


if __name__ == "__main__":
    main()
