-- The sound tweak of a push action (NULL: silent), so /notifications and pushers can give a client the
-- actions it was notified with: notify, plus the highlight and sound tweaks.
ALTER TABLE event_push_actions ADD COLUMN sound TEXT;
