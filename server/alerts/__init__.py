"""Alerts where managers already are: rules over the measured and registry data, de-duplicated into
open alerts, delivered to 企业微信 / 钉钉 group robots and e-mail per unit (issue 20)."""
