"""Task names: the contract's and the worker's own."""

ENROLL = "journeys.enroll"
EXECUTE_NODE = "journeys.execute_node"
JOURNEY_UPDATED = "journeys.journey_updated"
JOURNEY_DELETED = "journeys.journey_deleted"
TENANT_UPDATED = "journeys.tenant_updated"
UPDATE_CONTACTS = "journeys.update_contacts"
# Contract Version 2: two-way SMS and events.
INBOUND_MESSAGE = "journeys.inbound_message"
DELIVERY_RECEIPT = "journeys.delivery_receipt"
CONTACT_EVENT = "journeys.contact_event"
# The worker's own.
EXECUTE_BATCH = "journeys.execute_batch"
DELIVER_MESSAGE = "journeys.deliver_message"
DELIVER_MESSAGES = "journeys.deliver_messages"
DISPATCH_DUE = "journeys.dispatch_due"
PURGE_EXECUTIONS = "journeys.purge_executions"
REFRESH_STATS = "journeys.refresh_stats"
MAINTAIN_TABLES = "journeys.maintain_tables"

# The lanes (tasks/lanes.py says who goes where, docs/operations.md why).
DEFAULT_QUEUE = "journeys"  # upstream's messages and small batches: everyone's journeys
BULK_QUEUE = "journeys.bulk"  # large batches: blasts
DISPATCH_QUEUE = "journeys.dispatch"  # the dispatcher alone, never behind a backlog
STEP_QUEUES = (DEFAULT_QUEUE, BULK_QUEUE)
WORKER_QUEUES = (DISPATCH_QUEUE, DEFAULT_QUEUE, BULK_QUEUE)
