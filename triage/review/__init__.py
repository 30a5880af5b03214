"""The review service: investigators work the queue in a browser.

Storage (no web imports, so exports and the CLI can read grades and write audit events):
- `audit`: an append-only, hash-chained event log in SQLite (`AuditLog`).
- `casereview`: grades and the case's audit log in `CASE_DIR/review.sqlite` (`CaseReview`),
  and the stable finding id.
- `users`: investigators, examiners and supervisors in `$TRIAGE_HOME/users.db`.

The web layer (`app`, `server`, `templates/`, `static/`) imports Starlette, Jinja2 and uvicorn.
"""
