/** Size and count limits enforced at every boundary (relay edge and SDK). */
export const Limits = {
  /** Largest ciphertext for one device. */
  maxContentBytes: 96 * 1024,
  /** Largest WebSocket frame or HTTP body the relay accepts. */
  maxFrameBytes: 256 * 1024,
  /** Devices per account (device ids are 1..127 in libsignal). */
  maxDeviceId: 127,
  maxDevicesPerSend: 127,
  /** One-time pre-keys per upload, per kind. */
  maxPreKeysPerUpload: 100,
  maxHeaders: 16,
  maxHeaderBytes: 1024,
  maxPathBytes: 512,
  maxBodyTextBytes: 64 * 1024,
  maxReceiptTimestamps: 100,
  /** Plaintext Content is padded to a multiple of this before encryption. */
  paddingBlock: 160,
} as const;
