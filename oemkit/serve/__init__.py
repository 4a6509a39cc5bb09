"""The provisioning service (`oemkit serve`): units registered by the factory enrol on first boot and report READY
or FAILED; the fleet page shows every unit per site. The HTTP contract is docs/zero-touch.md's "HTTP contract (v1)".

One concern a module: settings; db (the engine); models; migrate (+ migrations/: Alembic, run at start-up); schemas
(the API's pydantic models); auth (the admin token); signing (report signatures); ratelimit (per unit); bodies (the
64 KiB bound); errors (one error shape); store (what a request writes); queries (what the admin side reads); page
(the fleet page, templates/); app (the routes). `oemkit --help` imports none of it: the CLI loads it for `serve`.
"""
