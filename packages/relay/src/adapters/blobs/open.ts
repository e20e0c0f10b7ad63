/** Opens the BlobStore a relay config names; the S3 driver loads only when S3 is chosen. */
import { join } from 'node:path';
import { resolveAttachmentConfig } from '../../attachment-config.js';
import type { BlobStore } from '../../blobstore.js';
import type { RelayConfig } from '../../config.js';
import { openFsBlobStore } from './fs.js';

export async function openBlobStore(config: RelayConfig): Promise<BlobStore> {
  const { store } = resolveAttachmentConfig(config.attachments);
  if (store.kind === 's3') {
    const { openS3BlobStore } = await import('./s3.js');
    return openS3BlobStore(store);
  }
  return openFsBlobStore(store.dir ?? join(config.dataDir, 'blobs'));
}
