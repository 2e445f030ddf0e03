"""A click on an alert's Acknowledge or Snooze button. Anyone Mattermost let see the alert may click;
the signed context is what is trusted, and the clicker is who Mattermost says clicked."""

from __future__ import annotations

from bot.context import Context, Reply
from bot.dispatch import ANYONE, BUTTON, Router
from bot.errors import NotFound
from bot.i18n import N_, _

router = Router()


@router.event(BUTTON, "alert button", N_("Acknowledge or Snooze on a disk alert"), role=ANYONE)
def click(ctx: Context, rest: str) -> Reply:
    alerts = ctx.services.alerts
    if alerts is None:
        raise NotFound(_("disk alerts are not enabled on this bot"))
    context = dict(ctx.event.context) if ctx.event is not None else {}
    return Reply(alerts.act(context, ctx.request.user_id))  # in the clicker's language, set by the dispatcher
