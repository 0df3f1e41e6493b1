/** Entry point of the bundle (action/dist/index.js): read the inputs, run, report one error line. */
import * as core from '@actions/core';
import * as github from '@actions/github';
import { ActionError } from './errors.js';
import { eventInfo } from './event.js';
import { getInputs } from './inputs.js';
import { run } from './run.js';
import { secretForms } from '../../shared/scrub.js';
import { heldSecrets } from './secrets.js';

async function main(): Promise<void> {
  const settings = getInputs((name) => core.getInput(name), eventInfo(github.context));
  // Before anything can print them (the runner masks `secrets.*` already; a literal would not be),
  // in every form they may be printed in.
  const secrets = heldSecrets([settings.agentToken, settings.githubToken], process.env);
  for (const form of secretForms(secrets)) core.setSecret(form);
  const commenting = settings.comment && settings.pullRequest !== null;
  const { serverUrl, runId, eventName } = github.context;
  await run(
    settings,
    {
      octokit: commenting ? github.getOctokit(settings.githubToken) : null,
      runUrl: Number.isFinite(runId)
        ? `${serverUrl}/${settings.owner}/${settings.repo}/actions/runs/${runId}`
        : undefined,
      eventName,
    },
    secrets,
  );
}

main().catch((e: unknown) => {
  if (!(e instanceof ActionError) && e instanceof Error && e.stack) core.debug(e.stack);
  core.setFailed(e instanceof ActionError ? e.message : `unexpected error: ${(e as Error)?.message ?? String(e)}`);
});
