-- Notifier (alerting/notify.py): each delivery row is unique per (event, channel, target) and
-- each escalation per (alarm, target), so a restarted notifier never sends again what it has
-- delivered; pending rows are what it still owes; the cursor is the last event it dispatched.

CREATE UNIQUE INDEX notifications_event_target_key
    ON notifications (event_id, channel, target) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX notifications_escalation_key
    ON notifications (alarm_id, target) WHERE channel = 'escalation';
CREATE INDEX notifications_pending_idx
    ON notifications (target, notification_id) WHERE status = 'pending';

CREATE TABLE notifier_cursor (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_event_id bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
