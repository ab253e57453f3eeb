"""schemathesis hooks (loaded through schemathesis.toml): the rules no OpenAPI schema can state.

The OpenAPI documents are exactly as strict as the server for every request
taken alone. A few requests that match the schema are still refused with 422,
because the rule depends on state the schema cannot see: the currency of the
wallet an amount moves, what is left of a hold or a transaction, a second field
(`from` after `to`, `min_amount` above `max_amount`, a cursor of a wallet's
list without filters sent with filters or the reverse, a transfer to its own
source), the clock, or an earlier request (an Idempotency-Key reused with
another body). api-contract.md prescribes 422 for each of them.

schemathesis.toml therefore lets `positive_data_acceptance` see 422, and
`state_rule_rejection` below fails every schema-valid request refused with a
422 that is not one of these rules: "amount 0 refused" still fails the run.
"""
from __future__ import annotations

import json

import schemathesis

# field (the last part of the key: `commands.3.amount` is `amount`) -> what its message says
STATE_RULES: dict[str, tuple[str, ...]] = {
    "amount": ("has more than",  # decimals beyond the wallet's currency
               "must not be more than the hold's amount", "must not be more than the transaction's amount"),
    "per_transaction": ("has more than",),
    "daily_debit": ("has more than",),
    "overdraft_limit": ("has more than",),
    # Not a rule of state: OpenAPI 3.0 cannot constrain an object's property names (no propertyNames), so a
    # metadata key outside [A-Za-z0-9_.-]{1,40} is schema-valid and refused, as the contract says.
    "metadata": ("must be 1-40 characters of letters, digits",),
    "to_wallet_id": ("must be a different wallet",),
    "transaction_id": ("cannot be reversed",),
    "as_of": ("must not be in the future", "must not be before the wallet was created"),
    "from": ("must not be after 'to'",),
    "min_amount": ("must not be more than 'max_amount'",),
    "cursor": ("it cannot continue this one",),  # a wallet's list with filters and without have two orders
    "to": ("must not be before from",),
}
# An Idempotency-Key reused with another body (an earlier request); a webhook URL whose host resolves to an
# address that may not be called (the DNS).
STATE_CODES = {"IDEMPOTENCY_KEY_REUSED", "WEBHOOK_URL_NOT_ALLOWED"}


def is_state_rule(problem: dict) -> bool:
    """True when a 422 problem names only rules that depend on state, not on the request alone."""
    if problem.get("code") in STATE_CODES:
        return True
    errors = problem.get("errors")
    if problem.get("code") != "VALIDATION_FAILED" or not isinstance(errors, dict) or not errors:
        return False
    return all(isinstance(messages, list) and messages
               and all(any(rule in str(m) for rule in STATE_RULES.get(str(key).rsplit(".", 1)[-1], ()))
                       for m in messages)
               for key, messages in errors.items())


@schemathesis.check
def state_rule_rejection(ctx, response, case):
    """A schema-valid request refused with 422 must have broken one of STATE_RULES."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (412, 422):
        return None
    try:
        problem = json.loads(response.content)
    except ValueError:
        problem = {}
    if response.status_code == 412:  # If-Match named a version the wallet is not at: state, by definition
        if not isinstance(problem, dict) or problem.get("code") != "PRECONDITION_FAILED":
            raise AssertionError(f"412 that is not PRECONDITION_FAILED: {response.content[:500]!r}")
        return None
    if not is_state_rule(problem if isinstance(problem, dict) else {}):
        raise AssertionError(f"Schema-valid request refused with 422 for a rule the schema could state: "
                             f"{response.content[:500]!r}")
    return None
