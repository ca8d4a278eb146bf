"""Task names: the contract's and the worker's own."""

ENROLL = "journeys.enroll"
EXECUTE_NODE = "journeys.execute_node"
JOURNEY_UPDATED = "journeys.journey_updated"
JOURNEY_DELETED = "journeys.journey_deleted"
TENANT_UPDATED = "journeys.tenant_updated"
# The worker's own.
EXECUTE_BATCH = "journeys.execute_batch"
DELIVER_MESSAGE = "journeys.deliver_message"
DELIVER_MESSAGES = "journeys.deliver_messages"
DISPATCH_DUE = "journeys.dispatch_due"
PURGE_EXECUTIONS = "journeys.purge_executions"
REFRESH_STATS = "journeys.refresh_stats"

DEFAULT_QUEUE = "journeys"
# Entry steps published by journeys.enroll. Workers consume both queues and the brokers
# alternate between them, so one tenant's flood of enrollments cannot hold back the steps of
# journeys already under way (hard case 11).
BULK_QUEUE = "journeys.bulk"
