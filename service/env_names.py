"""One rule from a setting's name to its environment variable.

The nginx, PgBouncer and PostgreSQL config templates read some limits too;
those settings carry their program's prefix and keep it, bare, so a template
and the app read the same variable. The mail and first-superuser settings keep
the bare names fastapi/full-stack-fastapi-template gives them (SMTP_HOST,
EMAILS_FROM_EMAIL, FIRST_SUPERUSER, ...), so a deployment moving from the
template keeps its environment. Every other setting is the app's own.
"""

from __future__ import annotations

TEMPLATE_PREFIXES = ("nginx_", "pgbouncer_", "postgres_")
TEMPLATE_COMPATIBLE_PREFIXES = ("smtp_", "emails_", "first_superuser")

# Variables under these prefixes name settings and nothing else: one that names
# no setting is a mistake (service.settings.refuse_unknown). NGINX_* and the
# others are not checked: their templates read variables the app does not.
CHECKED_PREFIXES = ("SLUICE_", *(p.upper() for p in TEMPLATE_COMPATIBLE_PREFIXES))


def env_name(name: str) -> str:
    """max_in_flight -> SLUICE_MAX_IN_FLIGHT; nginx_max_conns -> NGINX_MAX_CONNS."""
    upper = name.upper()
    bare = name.startswith(TEMPLATE_PREFIXES + TEMPLATE_COMPATIBLE_PREFIXES)
    return upper if bare else f"SLUICE_{upper}"
