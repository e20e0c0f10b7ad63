/**
 * Numbered schema migrations for the profile database. Entry i moves
 * `user_version` from i to i + 1. Never edit a shipped entry; append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: initial schema
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value ANY NOT NULL) STRICT;

  -- libsignal state, one opaque serialized record per row
  CREATE TABLE sessions (account TEXT NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL,
                         PRIMARY KEY (account, device)) STRICT;
  -- identity keys are per account (all devices of an account share one)
  -- status: 0 = default (trust on first use), 1 = verified, 2 = changed after verification (sending blocked)
  CREATE TABLE identities (account TEXT PRIMARY KEY, key BLOB NOT NULL, status INTEGER NOT NULL,
                           updated_at INTEGER NOT NULL) STRICT;
  CREATE TABLE prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL) STRICT;
  CREATE TABLE signed_prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL, created_at INTEGER NOT NULL) STRICT;
  CREATE TABLE kyber_prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL, last_resort INTEGER NOT NULL,
                              created_at INTEGER NOT NULL) STRICT;
  -- (key id, signed pre-key id, base key) triples already used with a last-resort Kyber key
  CREATE TABLE kyber_used (key_id INTEGER NOT NULL, signed_id INTEGER NOT NULL, base_key BLOB NOT NULL,
                           used_at INTEGER NOT NULL, PRIMARY KEY (key_id, signed_id, base_key)) STRICT;
  CREATE TABLE sender_keys (address TEXT NOT NULL, distribution_id TEXT NOT NULL, record BLOB NOT NULL,
                            PRIMARY KEY (address, distribution_id)) STRICT;

  -- username -> account id, learned from relay lookups
  CREATE TABLE contacts (username TEXT PRIMARY KEY, account TEXT NOT NULL, updated_at INTEGER NOT NULL) STRICT;
  CREATE INDEX contacts_account ON contacts (account);

  -- conversation history
  CREATE TABLE messages (id TEXT PRIMARY KEY, account TEXT NOT NULL, device INTEGER NOT NULL,
                         direction TEXT NOT NULL, timestamp INTEGER NOT NULL, server_timestamp INTEGER NOT NULL,
                         body TEXT NOT NULL, status TEXT NOT NULL, username TEXT) STRICT;
  CREATE INDEX messages_peer ON messages (account, timestamp);

  -- envelopes already processed, for dropping redeliveries and resends
  CREATE TABLE seen_envelopes (server_guid BLOB PRIMARY KEY, account TEXT, device INTEGER, client_ts INTEGER,
                               seen_at INTEGER NOT NULL) STRICT;
  CREATE UNIQUE INDEX seen_by_sender ON seen_envelopes (account, device, client_ts);

  -- what we sent, kept about a day so a peer's decryption-error message can be answered
  CREATE TABLE send_log (id INTEGER PRIMARY KEY AUTOINCREMENT, account TEXT NOT NULL, device INTEGER NOT NULL,
                         timestamp INTEGER NOT NULL, content BLOB NOT NULL, created_at INTEGER NOT NULL) STRICT;
  CREATE INDEX send_log_lookup ON send_log (account, device, timestamp);
  `,
  // 2: attachments
  `
  -- pointers of received attachments; status: pending | saved | invalid | unavailable
  CREATE TABLE attachments (message_id TEXT NOT NULL, idx INTEGER NOT NULL, blob_id TEXT NOT NULL,
                            key BLOB NOT NULL, digest BLOB NOT NULL, size INTEGER NOT NULL,
                            content_type TEXT NOT NULL, file_name TEXT NOT NULL, status TEXT NOT NULL,
                            path TEXT, PRIMARY KEY (message_id, idx)) STRICT;
  CREATE INDEX attachments_status ON attachments (status);
  -- uploads not finished yet, so a repeated send of the same file resumes (same key and IV = same blob)
  CREATE TABLE pending_uploads (fingerprint TEXT PRIMARY KEY, blob_id TEXT NOT NULL, location TEXT NOT NULL,
                                key BLOB NOT NULL, iv BLOB NOT NULL, created_at INTEGER NOT NULL) STRICT;
  `,
  // 3: sealed sender: contacts' profile keys (learned from their E2EE messages); usable = 0 after the relay refused the access key
  `
  CREATE TABLE profile_keys (account TEXT PRIMARY KEY, profile_key BLOB NOT NULL, usable INTEGER NOT NULL,
                             updated_at INTEGER NOT NULL) STRICT;
  `,
  // 4: groups (groups.ts). State is the signed GroupState bytes as last accepted; one row per group.
  // distribution_id: this device's current sender-key distribution id for the group; rotate = 1 makes the next send pick a new one.
  `
  CREATE TABLE groups (id TEXT PRIMARY KEY, revision INTEGER NOT NULL, title TEXT NOT NULL, state BLOB NOT NULL,
                       active INTEGER NOT NULL, distribution_id TEXT NOT NULL, rotate INTEGER NOT NULL,
                       updated_at INTEGER NOT NULL) STRICT;
  -- member devices that hold this device's sender key of a distribution id
  CREATE TABLE group_key_shared (group_id TEXT NOT NULL, distribution_id TEXT NOT NULL, account TEXT NOT NULL,
                                 device INTEGER NOT NULL, PRIMARY KEY (group_id, distribution_id, account, device)) STRICT;
  ALTER TABLE messages ADD COLUMN group_id TEXT;
  CREATE INDEX messages_group ON messages (group_id, timestamp) WHERE group_id IS NOT NULL;
  `,
  // 5: groups keep the signature of the state they accepted (signer account id, XEdDSA signature)
  `
  ALTER TABLE groups ADD COLUMN signer TEXT;
  ALTER TABLE groups ADD COLUMN signature BLOB;
  `,
  // 6: group messages this device sent, kept about a day (like send_log) so a member that could not
  // decrypt one (its decryption-error message names the timestamp) gets it again over 1:1
  `
  CREATE TABLE group_sends (timestamp INTEGER PRIMARY KEY, group_id TEXT NOT NULL, content BLOB NOT NULL,
                            created_at INTEGER NOT NULL) STRICT;
  `,
  // 7: seen envelopes are found by (relay timestamp, guid) instead of the random guid alone, so the rows of a
  // burst append to the index instead of each dirtying another encrypted page. The relay stores an envelope's
  // timestamp with it, so a redelivery carries the same pair. Rows from before keep server_ts NULL and are
  // still found (the lookups also match a NULL server_ts).
  `
  CREATE TABLE seen_envelopes_v7 (server_ts INTEGER, server_guid BLOB NOT NULL, account TEXT, device INTEGER,
                                  client_ts INTEGER, seen_at INTEGER NOT NULL) STRICT;
  INSERT INTO seen_envelopes_v7 (server_ts, server_guid, account, device, client_ts, seen_at)
    SELECT NULL, server_guid, account, device, client_ts, seen_at FROM seen_envelopes ORDER BY seen_at;
  DROP TABLE seen_envelopes;
  ALTER TABLE seen_envelopes_v7 RENAME TO seen_envelopes;
  CREATE UNIQUE INDEX seen_by_guid ON seen_envelopes (server_ts, server_guid);
  CREATE UNIQUE INDEX seen_by_sender ON seen_envelopes (account, device, client_ts);
  `,
];
