-- Users' push rules (PUT /pushrules/global/{kind}/{ruleId}): their own rules, and what they changed of the
-- server-default ones. The defaults themselves are code (homeserver/core/push_rules/default_rules.py), so a
-- user who never touched a rule has no row, and a new server version's defaults reach every user.

-- A user's own rules. Within (user, kind) a higher priority is checked first; ids never start with ".".
-- `conditions` (override, underride) and `actions` are JSON arrays; `pattern` is for content rules; room and
-- sender rules have neither, their rule id says what they match.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority BIGINT NOT NULL,
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled SMALLINT NOT NULL,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- A user's changes to a server-default rule: NULL where the user kept the default.
CREATE TABLE push_rule_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled SMALLINT,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);
