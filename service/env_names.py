"""One rule from a setting's name to its environment variable.

The nginx, PgBouncer and PostgreSQL config templates read some limits too;
those settings carry their program's prefix and keep it, bare, so a template
and the app read the same variable. The mail and first-superuser settings keep
the bare names fastapi/full-stack-fastapi-template gives them (SMTP_HOST,
EMAILS_FROM_EMAIL, FIRST_SUPERUSER, ...), so a deployment moving from the
template keeps its environment. Every other setting is the app's own.
"""

from __future__ import annotations

APP_PREFIX = "SLUICE_"
TEMPLATE_PREFIXES = ("nginx_", "pgbouncer_", "postgres_")
# The template's own names (fastapi/full-stack-fastapi-template), kept bare.
TEMPLATE_COMPATIBLE_PREFIXES = ("smtp_", "emails_", "first_superuser")
# Every variable under one of these prefixes is a setting or a name
# service/env_check.py knows; anything else there is refused as a typo.
ENV_PREFIXES = (
    APP_PREFIX,
    *(prefix.upper() for prefix in TEMPLATE_PREFIXES + TEMPLATE_COMPATIBLE_PREFIXES),
)


def env_name(name: str) -> str:
    """max_in_flight -> SLUICE_MAX_IN_FLIGHT; nginx_max_conns -> NGINX_MAX_CONNS."""
    upper = name.upper()
    bare = name.startswith(TEMPLATE_PREFIXES + TEMPLATE_COMPATIBLE_PREFIXES)
    return upper if bare else f"{APP_PREFIX}{upper}"


def has_settings_prefix(variable: str) -> bool:
    return variable.startswith(ENV_PREFIXES)
