"""The CAS endpoints under /cas/ (login, serviceValidate, p3/serviceValidate, ...)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("cas/", include("mama_cas.urls"))]
