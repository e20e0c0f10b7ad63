/**
 * Numbered PostgreSQL migrations; version N is `POSTGRES_MIGRATIONS[N - 1]`.
 * Never edit one that has shipped: add a new one. Each runs in its own
 * transaction and is recorded in `schema_migrations`.
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  // 1: accounts, devices, keys, queues and idempotency keys.
  `
  CREATE TABLE accounts (
    account_id   text PRIMARY KEY,
    username     text NOT NULL UNIQUE,
    identity_key bytea NOT NULL,
    created_at   bigint NOT NULL
  );
  CREATE TABLE devices (
    account_id      text NOT NULL REFERENCES accounts(account_id),
    device_id       integer NOT NULL,
    registration_id integer NOT NULL,
    password_salt   bytea NOT NULL,
    password_hash   bytea NOT NULL,
    signed_key_id   integer NOT NULL,
    signed_key      bytea NOT NULL,
    signed_key_sig  bytea NOT NULL,
    kyber_lr_id     integer NOT NULL,
    kyber_lr_key    bytea NOT NULL,
    kyber_lr_sig    bytea NOT NULL,
    created_at      bigint NOT NULL,
    PRIMARY KEY (account_id, device_id)
  );
  CREATE TABLE ec_prekeys (
    account_id text NOT NULL,
    device_id  integer NOT NULL,
    key_id     integer NOT NULL,
    public_key bytea NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
  );
  CREATE TABLE kyber_prekeys (
    account_id text NOT NULL,
    device_id  integer NOT NULL,
    key_id     integer NOT NULL,
    public_key bytea NOT NULL,
    signature  bytea NOT NULL,
    PRIMARY KEY (account_id, device_id, key_id)
  );
  -- The last sequence number handed out per device queue; its row lock orders commits.
  CREATE TABLE queue_heads (
    account_id text NOT NULL,
    device_id  integer NOT NULL,
    last_seq   bigint NOT NULL,
    PRIMARY KEY (account_id, device_id)
  );
  CREATE TABLE envelopes (
    dest_account   text NOT NULL,
    dest_device    integer NOT NULL,
    seq            bigint NOT NULL,
    guid           bytea NOT NULL UNIQUE,
    type           integer NOT NULL,
    source_account text,
    source_device  integer,
    client_ts      bigint NOT NULL,
    server_ts      bigint NOT NULL,
    content        bytea NOT NULL,
    urgent         boolean NOT NULL,
    PRIMARY KEY (dest_account, dest_device, seq)
  );
  CREATE INDEX envelopes_age ON envelopes (server_ts);
  CREATE TABLE sent_messages (
    sender_account text NOT NULL,
    sender_device  integer NOT NULL,
    destination    text NOT NULL,
    message_id     bytea NOT NULL,
    created_at     bigint NOT NULL,
    PRIMARY KEY (sender_account, sender_device, destination, message_id)
  );
  CREATE INDEX sent_messages_age ON sent_messages (created_at);
  `,
  // 2: sealed sender: the key senders present instead of credentials.
  `
  ALTER TABLE accounts ADD COLUMN access_key bytea;
  `,
  // 3: multi-device: when each device last connected, and single-use provisioning codes (hashes only).
  `
  ALTER TABLE devices ADD COLUMN last_seen bigint NOT NULL DEFAULT 0;
  UPDATE devices SET last_seen = created_at;
  CREATE INDEX devices_last_seen ON devices (last_seen);
  CREATE TABLE provisioning_codes (
    code_hash  bytea PRIMARY KEY,
    account_id text NOT NULL,
    expires_at bigint NOT NULL
  );
  `,
  // 4: idempotency keys carry the send's client timestamp and are ordered by it (appends instead of random
  // index pages; the SQLite migration 4 says why). Old keys cannot match new ones and are dropped. Envelope
  // guids are random server-made values nothing looks up, so their UNIQUE index goes.
  `
  CREATE TABLE idempotency_keys (
    client_ts      bigint NOT NULL,
    message_id     bytea NOT NULL,
    destination    text NOT NULL,
    sender_account text NOT NULL,
    sender_device  integer NOT NULL,
    created_at     bigint NOT NULL,
    PRIMARY KEY (client_ts, message_id, destination, sender_account, sender_device)
  );
  CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
  DROP TABLE sent_messages;
  ALTER TABLE envelopes DROP CONSTRAINT IF EXISTS envelopes_guid_key;
  `,
];
