/**
 * @parley/sdk — the Parley client: keys in an encrypted profile, libsignal
 * sessions, relay transport, and events.
 */
export { SdkError, SdkErrorCodes, type SdkErrorCode } from './errors.js';
export { ParleyClient, type IncomingMessage, type ParleyEvents, type HistoryEntry } from './client.js';
export type { GroupAlert, GroupAlertReason, GroupInfo, GroupMemberInfo, GroupRef, GroupUpdateEvent } from './groups.js';
export type { AttachmentInfo, SendFileOptions } from './attachment-flow.js';
export type { Progress } from './attachments.js';
export { encryptedSize, paddedSize } from './attachment-crypto.js';
export { verifyAndDecryptTo } from './attachments.js';
export { formatLink, parseLink, type LinkInfo } from './linking.js';
