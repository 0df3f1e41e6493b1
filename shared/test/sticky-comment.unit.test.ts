import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { getOctokit } from '@actions/github';
import { Octokit } from '@octokit/rest';
import { commentMarker, renderComment } from '../pr-comment.js';
import { tokenLogin, upsertStickyComment, type CommentsOctokit } from '../sticky-comment.js';
import { ACTIONS_BOT, APP_BOT, FakeGitHub } from './fake-github.js';

/**
 * Find-and-update against the fake GitHub (an in-process HTTP server), through both Octokits the
 * faces use: @actions/github's getOctokit (the Action, GITHUB_TOKEN: GET /user answers 403) and
 * @octokit/rest (the receiver, a token that can say who it is).
 */

const TOKEN = 'ghs_sticky_unit_token_0123456789';
const pr = { owner: 'o', repo: 'r', number: 1 };
const body = (status: string, stamp = '2026-11-27 10:05 UTC') =>
  renderComment({
    database: 'api',
    branch: 'pr-1',
    table: { parent: 'main', status, showPassword: false, passwordHidden: 'hidden' },
    footer: ['Updated', { stamp }, 'BetterPG'],
  });

const flavours: Array<{
  name: string;
  as: typeof ACTIONS_BOT;
  userForbidden: boolean;
  octokit: (url: string) => CommentsOctokit;
}> = [
  {
    name: "the Action's (@actions/github, GITHUB_TOKEN)",
    as: ACTIONS_BOT,
    userForbidden: true,
    octokit: (url) => getOctokit(TOKEN, { baseUrl: url }),
  },
  {
    name: "the receiver's (@octokit/rest, a token with a login)",
    as: APP_BOT,
    userForbidden: false,
    octokit: (url) => new Octokit({ auth: TOKEN, baseUrl: url }),
  },
];

for (const f of flavours) {
  describe(`sticky comment through ${f.name}`, () => {
    it('is found by marker and author through every page of 100, created once, updated in place, left alone when unchanged', async () => {
      const gh = new FakeGitHub(TOKEN, { as: f.as, userForbidden: f.userForbidden });
      await gh.start();
      try {
        gh.repo('o/r');
        // A long discussion, with a person quoting the marker and another bot's look-alike.
        for (let i = 0; i < 230; i++)
          gh.addComment(
            'o/r',
            1,
            i === 7 ? `${commentMarker('api')} a person quoting it` : `c${i}`,
            i % 2 ? 'alice' : 'bob',
          );
        gh.addComment('o/r', 1, `${commentMarker('api')} from a person`, 'carol');
        const kit = f.octokit(gh.url);
        const author = await tokenLogin(kit);
        assert.equal(author, f.userForbidden ? null : f.as.login);

        const first = await upsertStickyComment(kit, pr, 'api', body('running'), { author });
        assert.equal(first.action, 'created');
        const listed = () => gh.requests.filter((q) => q.method === 'GET' && q.path.endsWith('/issues/1/comments'));
        assert.ok(
          listed().every((q) => q.query.includes('per_page=100')),
          'every page asked with per_page=100',
        );
        assert.deepEqual(
          listed().map((q) => new URLSearchParams(q.query).get('page') ?? '1'),
          ['1', '2', '3'],
          'every page read',
        );
        assert.ok(
          listed()
            .slice(1)
            .every((q) => q.path.startsWith('/repositories/')),
          "GitHub's next links followed",
        );

        assert.equal((await upsertStickyComment(kit, pr, 'api', body('running'), { author })).action, 'unchanged');
        assert.equal(
          (await upsertStickyComment(kit, pr, 'api', body('running', '2026-11-28 09:00 UTC'), { author })).action,
          'unchanged',
          'only the time differs',
        );
        assert.equal(gh.count('PATCH', /comments/), 0);
        const updated = await upsertStickyComment(kit, pr, 'api', body('stopped'), { author });
        assert.equal(updated.action, 'updated');
        assert.equal(updated.comment.id, first.comment.id, 'the same comment');
        assert.equal(gh.botComments('o/r', 1).length, 1);
        assert.match(gh.botComments('o/r', 1)[0]!.body, /\| Status \| stopped \|/);
        assert.equal(
          gh.commentsOf('o/r', 1)[7]!.body,
          `${commentMarker('api')} a person quoting it`,
          "the person's quote is untouched",
        );

        assert.equal(
          (await upsertStickyComment(kit, pr, 'other', body('running'), { author })).action,
          'created',
          'one comment per database',
        );
        assert.equal(
          (
            await upsertStickyComment(kit, { ...pr, number: 2 }, 'api', body('running'), {
              author,
              createIfMissing: false,
            })
          ).action,
          'skipped',
        );
        assert.deepEqual(gh.commentsOf('o/r', 2), []);
      } finally {
        await gh.close();
      }
    });

    it('a read-only token fails with 403 from GitHub (the faces decide what that means)', async () => {
      const gh = new FakeGitHub(TOKEN, { as: f.as, userForbidden: f.userForbidden });
      await gh.start();
      try {
        gh.repo('o/r');
        gh.readOnly = true;
        const kit = f.octokit(gh.url);
        await assert.rejects(
          upsertStickyComment(kit, pr, 'api', body('running'), { author: await tokenLogin(kit) }),
          (e: { status?: number }) => e.status === 403,
        );
      } finally {
        await gh.close();
      }
    });
  });
}

describe('who we are', () => {
  it("with a login, another bot's comment carrying the marker is not ours", async () => {
    const gh = new FakeGitHub(TOKEN, { as: APP_BOT });
    await gh.start();
    try {
      gh.repo('o/r');
      const theirs = gh.addComment('o/r', 3, body('running'), 'dependabot[bot]');
      const kit = new Octokit({ auth: TOKEN, baseUrl: gh.url });
      const out = await upsertStickyComment(kit, { ...pr, number: 3 }, 'api', body('stopped'), {
        author: await tokenLogin(kit),
      });
      assert.equal(out.action, 'created');
      assert.equal(gh.commentsOf('o/r', 3).length, 2);
      assert.equal(theirs.body, body('running'), 'untouched');
    } finally {
      await gh.close();
    }
  });

  it('null (any bot) when the token is no user; a bot comment with the marker is then ours', async () => {
    const gh = new FakeGitHub(TOKEN, { as: ACTIONS_BOT, userForbidden: true });
    await gh.start();
    try {
      gh.repo('o/r');
      const mine = gh.addComment('o/r', 1, body('running'), ACTIONS_BOT);
      const kit = new Octokit({ auth: TOKEN, baseUrl: gh.url });
      const out = await upsertStickyComment(kit, pr, 'api', body('stopped'), { author: await tokenLogin(kit) });
      assert.ok(out.action === 'updated' && out.comment.id === mine.id);
      await assert.rejects(
        tokenLogin(new Octokit({ auth: 'wrong-token', baseUrl: gh.url })),
        (e: { status?: number }) => e.status === 401,
      );
    } finally {
      await gh.close();
    }
  });
});
