/**
 * Group state on the wire: round trips, every validation rule, and fuzzing
 * (random bytes and mutated valid messages only ever fail as WireError).
 */
import { create, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ContentSchema, GroupStateSchema } from '../src/gen/parley/v1/content_pb.js';
import {
  type Content,
  GROUP_SIGNATURE_CONTEXT,
  GroupLimits,
  type GroupState,
  WireError,
  accountIdFromBytes,
  decodeGroupState,
  encodeContent,
  encodeGroupState,
  groupIdFromHex,
  groupIdToHex,
  groupSignatureInput,
  normalizeGroupTitle,
  processContent,
} from '../src/index.js';

const acct = (n: number) => accountIdFromBytes(new Uint8Array(16).fill(n));
const state = (over: Partial<GroupState> = {}): GroupState => ({
  id: new Uint8Array(16).fill(9),
  revision: 1,
  title: 'Climbing',
  members: [
    { account: acct(1), admin: true, profileKey: new Uint8Array(32).fill(1), username: 'alice' },
    { account: acct(2), admin: false, profileKey: null, username: null },
  ],
  ...over,
});
const wireCode = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    if (err instanceof WireError) return err.code;
    throw err;
  }
  return 'ok';
};
/** Encodes a GroupState without the validation encodeGroupState applies, to feed bad ones to the decoder. */
const rawState = (s: {
  id?: Uint8Array;
  revision?: bigint;
  title?: string;
  members?: Array<{ account: Uint8Array; admin?: boolean; profileKey?: Uint8Array; username?: string }>;
}) => toBinary(GroupStateSchema, create(GroupStateSchema, s));

describe('group state', () => {
  it('round-trips through encode and decode', () => {
    const s = state();
    const back = decodeGroupState(encodeGroupState(s));
    expect(back).toEqual(s);
  });

  it('round-trips inside a signed update, a group data message and a group transcript', () => {
    const stateBytes = encodeGroupState(state());
    const contents: Content[] = [
      { kind: 'groupUpdate', update: { stateBytes, state: state(), signer: acct(1), signature: new Uint8Array(64).fill(3) } },
      { kind: 'groupUpdate', update: { stateBytes, state: state(), signer: null, signature: new Uint8Array(0) } },
      { kind: 'senderKeyDistribution', message: new Uint8Array(100).fill(5) },
      { kind: 'data', message: { body: 'hi', timestamp: 5, group: { id: new Uint8Array(16).fill(9) } } },
      { kind: 'syncSentGroup', timestamp: 6, message: { body: 'hi', timestamp: 6, group: { id: new Uint8Array(16).fill(9) } } },
    ];
    for (const c of contents) expect(processContent(encodeContent(c)).content).toEqual(c);
  });

  it('signs over a domain-separated input', () => {
    const bytes = encodeGroupState(state());
    const input = groupSignatureInput(bytes);
    expect(Buffer.from(input.subarray(0, GROUP_SIGNATURE_CONTEXT.length)).toString()).toBe('parley-group-v1\0');
    expect(input.subarray(GROUP_SIGNATURE_CONTEXT.length)).toEqual(bytes);
  });

  it('rejects every malformed field', () => {
    const ok = { account: new Uint8Array(16).fill(1), admin: true };
    const cases: Array<[string, Uint8Array]> = [
      ['short id', rawState({ id: new Uint8Array(15), revision: 1n, title: 't', members: [ok] })],
      ['revision 0', rawState({ id: new Uint8Array(16), revision: 0n, title: 't', members: [ok] })],
      ['revision too big', rawState({ id: new Uint8Array(16), revision: 2n ** 60n, title: 't', members: [ok] })],
      ['empty title', rawState({ id: new Uint8Array(16), revision: 1n, title: '', members: [ok] })],
      ['long title', rawState({ id: new Uint8Array(16), revision: 1n, title: 'x'.repeat(65), members: [ok] })],
      ['control char', rawState({ id: new Uint8Array(16), revision: 1n, title: 'a\nb', members: [ok] })],
      ['not NFC', rawState({ id: new Uint8Array(16), revision: 1n, title: 'e\u0301', members: [ok] })],
      ['padded title', rawState({ id: new Uint8Array(16), revision: 1n, title: ' t', members: [ok] })],
      ['no members', rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [] })],
      ['no admin', rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [{ ...ok, admin: false }] })],
      ['duplicate member', rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [ok, ok] })],
      [
        'bad account',
        rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [{ account: new Uint8Array(15), admin: true }] }),
      ],
      [
        'bad profile key',
        rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [{ ...ok, profileKey: new Uint8Array(31) }] }),
      ],
      [
        'bad username',
        rawState({ id: new Uint8Array(16), revision: 1n, title: 't', members: [{ ...ok, username: 'Not Valid' }] }),
      ],
      [
        'too many members',
        rawState({
          id: new Uint8Array(16),
          revision: 1n,
          title: 't',
          members: Array.from({ length: GroupLimits.maxMembers + 1 }, (_, i) => ({
            account: Buffer.from(i.toString(16).padStart(32, '0'), 'hex'),
            admin: true,
          })),
        }),
      ],
    ];
    for (const [name, bytes] of cases)
      expect(
        wireCode(() => decodeGroupState(bytes)),
        name,
      ).toBe('WIRE_BAD_FIELD');
    expect(
      wireCode(() => decodeGroupState(new Uint8Array([0xff, 0xff]))),
      'garbage',
    ).toBe('WIRE_MALFORMED');
    // The biggest group fits one Content with room to spare.
    const big = state({
      members: Array.from({ length: GroupLimits.maxMembers }, (_, i) => ({
        account: accountIdFromBytes(Buffer.from(i.toString(16).padStart(32, '0'), 'hex')),
        admin: i === 0,
        profileKey: new Uint8Array(32).fill(7),
        username: `user_${'x'.repeat(20)}${i}`.slice(0, 32),
      })),
    });
    const bytes = encodeGroupState(big);
    expect(decodeGroupState(bytes).members).toHaveLength(GroupLimits.maxMembers);
    const content = encodeContent({
      kind: 'groupUpdate',
      update: { stateBytes: bytes, state: big, signer: acct(1), signature: new Uint8Array(64) },
    });
    expect(content.length).toBeLessThan(96 * 1024 - 2048);
  });

  it('rejects malformed updates, group contexts and mixed contents', () => {
    const stateBytes = encodeGroupState(state());
    const content = (init: Parameters<typeof create<typeof ContentSchema>>[1]) =>
      toBinary(ContentSchema, create(ContentSchema, init));
    expect(
      wireCode(() =>
        processContent(content({ groupUpdate: { state: stateBytes, signer: new Uint8Array(3), signature: new Uint8Array(64) } })),
      ),
    ).toBe('WIRE_BAD_FIELD');
    expect(
      wireCode(() =>
        processContent(
          content({ groupUpdate: { state: stateBytes, signer: new Uint8Array(16), signature: new Uint8Array(63) } }),
        ),
      ),
    ).toBe('WIRE_BAD_FIELD');
    expect(
      wireCode(() => processContent(content({ groupUpdate: { state: new Uint8Array([1, 2, 3]), signer: new Uint8Array(16) } }))),
    ).not.toBe('ok');
    expect(wireCode(() => processContent(content({ dataMessage: { body: 'x', group: { id: new Uint8Array(8) } } })))).toBe(
      'WIRE_BAD_FIELD',
    );
    expect(wireCode(() => processContent(content({ senderKeyDistributionMessage: new Uint8Array(2000) })))).toBe(
      'WIRE_BAD_FIELD',
    );
    expect(wireCode(() => processContent(content({ senderKeyDistributionMessage: new Uint8Array(10), nullMessage: {} })))).toBe(
      'WIRE_BAD_FIELD',
    );
    expect(wireCode(() => processContent(content({ groupUpdate: { state: stateBytes }, nullMessage: {} })))).toBe(
      'WIRE_BAD_FIELD',
    );
    // A group transcript names no 1:1 destination.
    expect(
      wireCode(() =>
        processContent(
          content({
            syncMessage: {
              sent: {
                destinationAccount: new Uint8Array(16),
                timestamp: 1n,
                message: { body: 'x', group: { id: new Uint8Array(16) } },
              },
            },
          }),
        ),
      ),
    ).toBe('WIRE_BAD_FIELD');
  });

  it('normalizes titles as users type them', () => {
    expect(normalizeGroupTitle('  Cafe\u0301  ')).toBe('Café');
    expect(normalizeGroupTitle('🧗'.repeat(64))).toBe('🧗'.repeat(64));
    for (const bad of ['', '   ', 'x'.repeat(65), 'tab\there', 'line\u2028sep', 42 as unknown as string])
      expect(
        wireCode(() => normalizeGroupTitle(bad)),
        JSON.stringify(bad),
      ).toBe('WIRE_BAD_FIELD');
  });

  it('group ids as hex', () => {
    const id = new Uint8Array(16).fill(0xab);
    expect(groupIdToHex(id)).toBe('ab'.repeat(16));
    expect(groupIdFromHex('ab'.repeat(16))).toEqual(id);
    expect(wireCode(() => groupIdFromHex('AB'.repeat(16)))).toBe('WIRE_BAD_FIELD');
    expect(wireCode(() => groupIdFromHex('ab'))).toBe('WIRE_BAD_FIELD');
  });
});

describe('fuzz: group decoders fail only with WireError', () => {
  it('random bytes as a group state', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (data) => {
        try {
          decodeGroupState(data);
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('valid updates with random bytes flipped', () => {
    const stateBytes = encodeGroupState(state());
    const valid = encodeContent({
      kind: 'groupUpdate',
      update: { stateBytes, state: state(), signer: acct(1), signature: new Uint8Array(64).fill(3) },
    });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        (flips) => {
          const b = new Uint8Array(valid);
          for (const [i, v] of flips) b[i] = v;
          try {
            const c = processContent(b).content;
            // Whatever survives decoding is a fully validated update.
            if (c.kind === 'groupUpdate') expect(decodeGroupState(c.update.stateBytes)).toEqual(c.update.state);
          } catch (err) {
            expect(err).toBeInstanceOf(WireError);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('any valid state round-trips (property)', () => {
    const member = fc.record({
      account: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => accountIdFromBytes(b)),
      admin: fc.boolean(),
      profileKey: fc.option(fc.uint8Array({ minLength: 32, maxLength: 32 }), { nil: null }),
      username: fc.option(fc.stringMatching(/^[a-z0-9_.]{3,32}$/), { nil: null }),
    });
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 16, maxLength: 16 }),
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9 ]{0,62}[A-Za-z0-9]$/),
        fc.uniqueArray(member, { minLength: 1, maxLength: 20, selector: (m) => m.account }),
        (id, revision, title, members) => {
          const first = members[0];
          if (first) first.admin = true;
          const s: GroupState = { id, revision, title, members };
          expect(decodeGroupState(encodeGroupState(s))).toEqual(s);
        },
      ),
      { numRuns: 300 },
    );
  });
});
