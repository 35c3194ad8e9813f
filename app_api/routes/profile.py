"""The user's profile (timezone, quiet hours, tip kinds, channels) and consents with their history."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from fastapi import APIRouter, HTTPException
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    UrlConstraints,
    model_validator,
)
from sqlalchemy import select

from app_api import outbound
from app_api.deps import CurrentUser, Now, SessionDep, SettingsDep
from app_api.preferences import Purpose, current_consents, profile_of, valid_timezone
from app_api.problems import openapi_responses
from app_api.tables import WEBHOOK_URL_MAX, Consent, aware
from data_contracts import CandidateKind

router = APIRouter(prefix="/me", tags=["profile"])

HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", examples=["22:00"])]
Timezone = Annotated[str, Field(max_length=64, examples=["Europe/Berlin"]), AfterValidator(valid_timezone)]
NotifyChannel = Literal["email", "webhook"]


def _fits_the_column(url: HttpUrl) -> HttpUrl:
    # the input's length is checked before parsing; this is the stored (normalized) form's, which
    # can be longer (an internationalized host becomes punycode)
    if len(str(url)) > WEBHOOK_URL_MAX:
        raise ValueError(f"webhook_url is longer than {WEBHOOK_URL_MAX} characters once normalized")
    return url


WebhookUrl = Annotated[HttpUrl, UrlConstraints(max_length=WEBHOOK_URL_MAX), AfterValidator(_fits_the_column)]


class QuietHours(BaseModel):
    """A daily window (local wall-clock times) with no notifications; ``end`` before ``start`` wraps."""

    model_config = ConfigDict(extra="forbid")
    start: HHMM
    end: HHMM


class ProfileBody(BaseModel):
    """A user's preferences."""

    model_config = ConfigDict(extra="forbid")
    timezone: Timezone = "UTC"
    quiet_hours: QuietHours | None = None
    tip_kinds: list[CandidateKind] = Field(default=[], max_length=2, description="empty means every kind")
    channels: list[NotifyChannel] = Field(default=[], max_length=2)
    webhook_url: WebhookUrl | None = Field(default=None, description="where the webhook channel posts")

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> Self:
        if "webhook" in self.channels and self.webhook_url is None:
            raise ValueError("the webhook channel needs a webhook_url")
        return self


class ConsentChange(BaseModel):
    """Give or withdraw one consent."""

    model_config = ConfigDict(extra="forbid")
    purpose: Purpose
    granted: bool


class ConsentEvent(BaseModel):
    """One change of a consent."""

    purpose: Purpose
    granted: bool
    at: AwareDatetime


class Consents(BaseModel):
    """Current consents and every change that led to them."""

    current: dict[Purpose, bool]
    history: list[ConsentEvent]


def _view(session: SessionDep, user: CurrentUser) -> ProfileBody:
    p = profile_of(session, user.id)
    quiet = QuietHours(start=p.quiet_start, end=p.quiet_end) if p.quiet_start and p.quiet_end else None
    return ProfileBody(
        timezone=user.timezone,
        quiet_hours=quiet,
        tip_kinds=[CandidateKind(k) for k in p.tip_kinds],
        channels=list(p.channels),
        webhook_url=HttpUrl(p.webhook_url) if p.webhook_url else None,
    )


@router.get("/profile", responses=openapi_responses(401))
def get_profile(user: CurrentUser, session: SessionDep) -> ProfileBody:
    """The caller's profile."""
    return _view(session, user)


@router.put("/profile", responses=openapi_responses(401))
def put_profile(body: ProfileBody, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> ProfileBody:
    """Replace the caller's profile."""
    if body.webhook_url is not None and settings.env != "local":
        try:
            outbound.check_written(str(body.webhook_url))
        except outbound.NotPublic as exc:
            raise HTTPException(422, str(exc)) from None
    p = profile_of(session, user.id)
    user.timezone = body.timezone
    p.quiet_start = body.quiet_hours.start if body.quiet_hours else None
    p.quiet_end = body.quiet_hours.end if body.quiet_hours else None
    p.tip_kinds = [k.value for k in body.tip_kinds]
    p.channels = list(dict.fromkeys(body.channels))
    p.webhook_url = str(body.webhook_url) if body.webhook_url else None
    session.add(p)
    session.commit()
    return _view(session, user)


def _consents(session: SessionDep, user_id: str) -> Consents:
    rows = session.execute(select(Consent).where(Consent.user_id == user_id).order_by(Consent.at, Consent.id)).scalars()
    history = [ConsentEvent(purpose=Purpose(r.purpose), granted=r.granted, at=aware(r.at)) for r in rows]
    return Consents(current=current_consents(session, user_id), history=history)


@router.get("/consents", responses=openapi_responses(401))
def get_consents(user: CurrentUser, session: SessionDep) -> Consents:
    """The caller's consents and their history."""
    return _consents(session, user.id)


@router.post("/consents", responses=openapi_responses(401))
def change_consent(body: ConsentChange, user: CurrentUser, session: SessionDep, now: Now) -> Consents:
    """Give or withdraw a consent (recorded with the time, never overwritten)."""
    session.add(Consent(user_id=user.id, purpose=body.purpose.value, granted=body.granted, at=now))
    session.commit()
    return _consents(session, user.id)
