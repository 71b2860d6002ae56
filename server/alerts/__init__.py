"""Alerts where managers already are: rules over the measured and registry data, de-duplicated into
open alerts, delivered to 企业微信 / 钉钉 group robots and e-mail per unit (issue 20)."""

# The web package first: its app imports this package's modules, which use server.web.db and
# server.web.i18n; importing server.alerts.* on its own must not find those half-initialised.
import server.web  # noqa: F401
