"""Run the test CAS server: migrate its private SQLite database, create the users given in
JISHI_CAS_USERS (JSON: {login: {"password", "first_name", "last_name", "email"}}), serve on
127.0.0.1:<port> with Django's threaded development server (a test fixture, never deployed)."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sim.cas_server.settings")
    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth.models import User

    call_command("migrate", verbosity=0, interactive=False)
    for login, u in json.loads(os.environ.get("JISHI_CAS_USERS", "{}")).items():
        user, _ = User.objects.get_or_create(username=login)
        user.first_name, user.last_name = u.get("first_name", ""), u.get("last_name", "")
        user.email = u.get("email", "")
        user.set_password(u["password"])
        user.save()
    call_command("runserver", f"127.0.0.1:{sys.argv[1]}", use_reloader=False, use_threading=True, verbosity=0)


if __name__ == "__main__":
    main()
