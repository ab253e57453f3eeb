"""The Wallet API's operations as documented in /openapi.json."""
from __future__ import annotations

from app.api import docs_schemas as out
from app.api import schemas as body
from app.api.openapi import Operation

TITLE = "Wallet API"
DESCRIPTION = ("Wallets, funding, transfers and more money operations. Every POST/PUT is a command: it answers "
               "202 Accepted with a job to poll at /jobs/{id}.")

OPERATIONS: dict[str, Operation] = {
    "health.health": Operation("Liveness", response=out.HealthOut, public=True, tags=("operations",)),
    "health.ready": Operation("Readiness: PostgreSQL, Redis and Kafka answer and a worker is alive; `pipeline` "
                              "reports a stalled relay or history worker without changing the status",
                              response=out.ReadyOut, public=True, tags=("operations",),
                              other_json_responses=((503, "Not ready: `down` names what is missing"),)),
    "wallets.create_wallet": Operation("Create a wallet", body=body.CreateWalletSchema, command=True),
    "wallets.get_wallet": Operation("Read a wallet (ETag: its version, for If-Match)", response=out.WalletOut,
                                    etag=True),
    "wallets.list_user_wallets": Operation("List a user's wallets, newest first", response=out.WalletList,
                                           query=body.UserWalletsQuerySchema),
    "wallets.list_transactions": Operation(
        "List or search a wallet's transactions, newest first", response=out.TransactionList,
        query=body.TransactionsQuerySchema,
        description="Without filters: newest first in the wallet's own order, by version (cursor: the version). "
                    "With filters (they combine with AND): what `GET /transactions?wallet_id=` finds, newest first "
                    "by `created_at`, then `id` (cursor: `<created_at µs>.<id hex>`); a cursor of the other order "
                    "is 422. 422 too when `from` is after `to` or `min_amount` is more than `max_amount`."),
    "wallets.freeze": Operation("Freeze a wallet: no money moves in or out", body=body.FreezeSchema, command=True,
                                if_match=True),
    "wallets.unfreeze": Operation("Unfreeze a wallet", body=body.EmptySchema, command=True,
                                  if_match=True),
    "wallets.close": Operation("Close an empty wallet, for good", body=body.EmptySchema, command=True,
                               if_match=True),
    "wallets.set_limits": Operation("Replace a wallet's debit limits", body=body.LimitsSchema, command=True,
                                    if_match=True),
    "wallets.balance": Operation("Balance and available balance, now or as of a past instant",
                                 response=out.BalanceOut, query=body.BalanceQuerySchema),
    "wallets.statement": Operation("Statement: opening and closing balance and the transactions between",
                                   response=out.StatementOut, query=body.StatementQuerySchema),
    "movements.fund": Operation("Fund a wallet from outside", body=body.FundSchema, command=True, if_match=True,
                                tags=("money",)),
    "movements.withdraw": Operation("Withdraw money out of the system", body=body.WithdrawSchema, command=True, if_match=True,
                                    tags=("money",)),
    "movements.transfer": Operation("Transfer to another wallet of the same currency", body=body.TransferSchema,
                                    command=True, if_match=True, tags=("money",)),
    "holds.place_hold": Operation("Place a hold (reserve money)", body=body.PlaceHoldSchema, command=True, if_match=True),
    "holds.get_hold": Operation("Read a hold", response=out.HoldOut),
    "holds.capture_hold": Operation("Capture a hold, in full or in part, to a wallet or out",
                                    body=body.CaptureHoldSchema, command=True),
    "holds.void_hold": Operation("Void a hold", body=body.EmptySchema, command=True),
    "transactions.search_transactions": Operation(
        "Search the tenant's transactions, newest first", response=out.TransactionList,
        query=body.TransactionSearchQuerySchema,
        description="Newest first by `created_at`, then `id`. Filters combine with AND; `wallet_id` matches a "
                    "transaction the wallet takes part in, as its wallet or its counterparty. 422 when `from` is "
                    "after `to` or `min_amount` is more than `max_amount`."),
    "transactions.get_transaction": Operation("Read a transaction", response=out.TransactionOut),
    "transactions.reverse": Operation("Reverse all or part of a transaction", body=body.ReverseSchema,
                                      command=True),
    "jobs.get_job": Operation("What became of a command", response=out.JobOut),
    "jobs.cancel_job": Operation("Cancel a queued command: it becomes `canceled` and never touches the ledger "
                                 "(409 JOB_NOT_CANCELABLE once it is running or final)", response=out.JobOut,
                                 problems=(409,)),
    "batches.submit_batch": Operation(
        "Submit 1–1000 fund / withdraw / transfer commands at once", body=body.BatchBodySchema, accepted=out.BatchOut,
        tags=("money",), problems=(404,),
        description="Independent (`atomic: false`, the default): each command is a job of its own, with the "
                    "results and error codes of a single command. Atomic: one job of type `batch` applies every "
                    "command or none, in one ledger transaction; a rejection names the command's `index`. An "
                    "invalid item rejects the whole request (errors keyed `commands.<index>.<field>`)."),
    "batches.get_batch": Operation("A batch: its status and its jobs' counts", response=out.BatchOut),
    "batches.list_batch_jobs": Operation("A batch's jobs, in command order", response=out.JobList,
                                         query=body.BatchJobsQuerySchema),
    "webhooks.register": Operation(
        "Register a webhook endpoint; its signing secret is in this answer only", body=body.WebhookEndpointSchema,
        response=out.WebhookEndpointOut, success=201, tags=("webhooks",),
        description="422 WEBHOOK_URL_NOT_ALLOWED for a URL that is not http(s), longer than 2048 characters, or "
                    "whose host resolves to a loopback, private, link-local or metadata address."),
    "webhooks.list_endpoints": Operation("The tenant's webhook endpoints (no secrets)", tags=("webhooks",),
                                         response=out.WebhookEndpointList),
    "webhooks.get_endpoint": Operation("A webhook endpoint", response=out.WebhookEndpointOut, tags=("webhooks",)),
    "webhooks.delete_endpoint": Operation("Delete a webhook endpoint and its deliveries", success=204,
                                          tags=("webhooks",)),
    "webhooks.rotate_secret": Operation("A new signing secret; the previous one signs too for 24 h",
                                        response=out.WebhookEndpointOut, tags=("webhooks",)),
    "webhooks.list_deliveries": Operation("An endpoint's deliveries, newest first", tags=("webhooks",),
                                          response=out.WebhookDeliveryList, query=body.DeliveriesQuerySchema),
    "webhooks.list_attempts": Operation("Every attempt at a delivery, oldest first", tags=("webhooks",),
                                        response=out.WebhookAttemptList),
    "webhooks.retry_delivery": Operation("Deliver again now, with the same webhook-id", success=202,
                                         response=out.WebhookDeliveryOut, tags=("webhooks",)),
    "metrics.metrics_endpoint": Operation("Prometheus metrics (admin key)", tags=("operations",), text="text/plain",
                                          description="Prometheus text format; see the README for the series."),
}
