"""A webhook called when a batch ends `partially_failed` or `failed`: a Prefect automation.

Prefect's automations cannot be declared in deployments.yaml, and their webhook action needs
the id of a saved Webhook block, so `docbatch webhook URL` creates both (again: replaces
them). The trigger matches the `docbatch.status` label of the `docbatch.batch.completed`
event's resource (triggers match resource labels, not payloads). The POSTed totals include
`needs_review` (succeeded documents that need a person's look), and `needs_review_files` names
the first of them (all are in the report).
"""

from __future__ import annotations

from pydantic import SecretStr

AUTOMATION_NAME = "docbatch: batch ended with failures"
WEBHOOK_BLOCK = "docbatch-batch-failures"
PAYLOAD = (
    '{"event": "{{ event.event }}", "batch_name": {{ event.payload.batch_name | tojson }}, '
    '"status": "{{ event.payload.status }}", "totals": {{ event.payload.totals | tojson }}, '
    '"report": {{ event.payload.report | tojson }}, "needs_review_files": {{ event.payload.needs_review_files | tojson }}, '
    '"occurred": "{{ event.occurred }}"}'
)


def install_webhook(url: str, *, allow_private_urls: bool = False) -> str:
    """Save the Webhook block and (re)create the automation; returns the automation's id."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import EventTrigger, Posture

    block_id = Webhook(
        method="POST", url=SecretStr(url), headers={"Content-Type": "application/json"}, allow_private_urls=allow_private_urls
    ).save(WEBHOOK_BLOCK, overwrite=True)
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(existing.id)
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Calls the docbatch webhook when a batch ends partially_failed or failed.",
        trigger=EventTrigger(
            expect={"docbatch.batch.completed"},
            match={"docbatch.status": ["partially_failed", "failed"]},
            posture=Posture.Reactive,
            threshold=1,
            within=0,
        ),
        actions=[CallWebhook(block_document_id=block_id, payload=PAYLOAD)],
    ).create()
    return str(automation.id)

