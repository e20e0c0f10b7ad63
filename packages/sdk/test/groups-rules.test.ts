/**
 * The acceptance rules for group updates (docs/PROTOCOL.md, "Acceptance
 * rules"), one by one, with real libsignal identity keys: what a client does
 * with an update given the state it holds.
 */
import { IdentityKeyPair } from '@signalapp/libsignal-client';
import {
  type AccountId,
  type GroupState,
  type GroupUpdate,
  accountIdFromBytes,
  encodeGroupState,
  groupSignatureInput,
} from '@parley/wire';
import { describe, expect, it } from 'vitest';
import { isSelfLeave, judgeUpdate, stateAfterLeave } from '../src/groups.js';

const people = ['alice', 'bob', 'carol', 'dave'] as const;
type Name = (typeof people)[number];
const keys = Object.fromEntries(people.map((p) => [p, IdentityKeyPair.generate()])) as Record<Name, IdentityKeyPair>;
const acct = Object.fromEntries(people.map((p, i) => [p, accountIdFromBytes(new Uint8Array(16).fill(i + 1))])) as Record<
  Name,
  AccountId
>;

function state(revision: number, members: Array<[Name, boolean]>, title = 'Trip'): GroupState {
  return {
    id: new Uint8Array(16).fill(0x42),
    revision,
    title,
    members: members.map(([n, admin]) => ({ account: acct[n], admin, profileKey: null, username: n })),
  };
}
function signed(s: GroupState, by: Name, signWith: Name = by): GroupUpdate {
  const stateBytes = encodeGroupState(s);
  return {
    stateBytes,
    state: s,
    signer: acct[by],
    signature: keys[signWith].privateKey.sign(new Uint8Array(groupSignatureInput(stateBytes))),
  };
}
function judge(update: GroupUpdate, sender: Name, local: GroupState | null, me: Name = 'carol') {
  const signerKey = update.signer ? (keys[people.find((p) => acct[p] === update.signer) as Name]?.publicKey ?? null) : null;
  const r = judgeUpdate({ update, senderAccount: acct[sender], signerKey, local, me: acct[me] });
  return r.kind === 'accept' ? 'accept' : r.reason;
}

const v1 = state(1, [
  ['alice', true],
  ['bob', false],
  ['carol', false],
]);
const addDave = state(2, [
  ['alice', true],
  ['bob', false],
  ['carol', false],
  ['dave', false],
]);

describe('group update acceptance rules', () => {
  it('accepts an admin’s next revision', () => {
    expect(judge(signed(addDave, 'alice'), 'alice', v1)).toBe('accept');
    expect(
      judge(
        signed(
          state(
            9,
            v1.members.map((m) => [people.find((p) => acct[p] === m.account)!, m.admin]),
          ),
          'alice',
        ),
        'alice',
        v1,
      ),
    ).toBe('accept'); // revisions may skip
  });

  it('1: unsigned', () => {
    const u = signed(addDave, 'alice');
    expect(judge({ ...u, signature: new Uint8Array(0) }, 'alice', v1)).toBe('unsigned');
    expect(judge({ ...u, signer: null }, 'alice', v1)).toBe('unsigned');
  });

  it('2: signer is not the authenticated sender, or the signature does not verify', () => {
    expect(judge(signed(addDave, 'alice'), 'dave', v1)).toBe('bad-signature'); // a genuine update forwarded by someone else
    expect(judge(signed(addDave, 'alice', 'dave'), 'alice', v1)).toBe('bad-signature'); // claims alice, signed by dave
    const u = signed(addDave, 'alice');
    const tampered = encodeGroupState({ ...addDave, title: 'Other' });
    expect(judge({ ...u, stateBytes: tampered }, 'alice', v1)).toBe('bad-signature'); // signature over other bytes
    const noKey = judgeUpdate({ update: u, senderAccount: acct.alice, signerKey: null, local: v1, me: acct.carol });
    expect(noKey).toEqual({ kind: 'reject', reason: 'bad-signature' }); // we hold no identity key for the signer
  });

  it('3: stale revisions, including concurrent updates (first seen wins)', () => {
    expect(judge(signed(v1, 'alice'), 'alice', v1)).toBe('stale-revision');
    expect(judge(signed(v1, 'alice'), 'alice', addDave)).toBe('stale-revision');
    // Two admins change revision 2 at once: whichever a client sees first is kept.
    const twoAdmins = state(2, [
      ['alice', true],
      ['bob', true],
      ['carol', false],
    ]);
    const byAlice = state(3, [
      ['alice', true],
      ['bob', true],
      ['carol', false],
      ['dave', false],
    ]);
    const byBob = state(3, [
      ['alice', true],
      ['bob', true],
    ]);
    expect(judge(signed(byAlice, 'alice'), 'alice', twoAdmins)).toBe('accept');
    expect(judge(signed(byBob, 'bob'), 'bob', twoAdmins, 'alice')).toBe('accept');
    expect(judge(signed(byBob, 'bob'), 'bob', byAlice)).toBe('stale-revision');
    expect(judge(signed(byAlice, 'alice'), 'alice', byBob, 'alice')).toBe('stale-revision');
  });

  it('4: only admins change a known group, except a member leaving', () => {
    expect(judge(signed(addDave, 'bob'), 'bob', v1)).toBe('not-admin');
    expect(judge(signed(addDave, 'dave'), 'dave', v1)).toBe('not-admin');
    const bobLeaves = stateAfterLeave(v1, acct.bob);
    expect(bobLeaves.members.map((m) => m.account)).toEqual([acct.alice, acct.carol]);
    expect(judge(signed(bobLeaves, 'bob'), 'bob', v1)).toBe('accept');
    // A "leave" that changes anything else is not a leave.
    expect(judge(signed({ ...bobLeaves, title: 'Mine now' }, 'bob'), 'bob', v1)).toBe('not-admin');
    expect(judge(signed({ ...bobLeaves, revision: 3 }, 'bob'), 'bob', v1)).toBe('not-admin');
    const promoted = { ...bobLeaves, members: bobLeaves.members.map((m) => ({ ...m, admin: true })) };
    expect(judge(signed(promoted, 'bob'), 'bob', v1)).toBe('not-admin');
    const carolOut = { ...bobLeaves, members: bobLeaves.members.filter((m) => m.account !== acct.carol) };
    expect(judge(signed(carolOut, 'bob'), 'bob', v1, 'alice')).toBe('not-admin');
    // A non-member cannot "leave".
    expect(isSelfLeave(v1, stateAfterLeave(v1, acct.dave), acct.dave)).toBe(false);
  });

  it('4: the only admin leaving promotes the first remaining member', () => {
    const aliceLeaves = stateAfterLeave(v1, acct.alice);
    expect(aliceLeaves.members.map((m) => [m.account, m.admin])).toEqual([
      [acct.bob, true],
      [acct.carol, false],
    ]);
    expect(judge(signed(aliceLeaves, 'alice'), 'alice', v1)).toBe('accept');
    // The leaver was an admin, so rule 4 accepts it as any admin update: the promotion is how the
    // leaver's own client builds the state, not something receivers could require of an admin.
    const otherHeir = { ...aliceLeaves, members: aliceLeaves.members.map((m, i) => ({ ...m, admin: i === 1 })) };
    expect(judge(signed(otherHeir, 'alice'), 'alice', v1)).toBe('accept');
    // A state without any admin is not a valid state at all (the wire rejects it before the rules).
    expect(() =>
      encodeGroupState({ ...aliceLeaves, members: aliceLeaves.members.map((m) => ({ ...m, admin: false })) }),
    ).toThrow();
  });

  it('5: an unknown group needs an admin signer and must list the receiver', () => {
    expect(judge(signed(v1, 'alice'), 'alice', null)).toBe('accept');
    expect(judge(signed(v1, 'bob'), 'bob', null)).toBe('not-admin');
    expect(judge(signed(v1, 'alice'), 'alice', null, 'dave')).toBe('not-member');
  });
});
