import type { BrazeClient, UpstreamResponse } from '../adapters/braze-client.js';
import type { UpstreamPacer } from '../adapters/upstream-pacer.js';
import { CommandRefusedError, limitsUnavailable } from '../domain/errors.js';
import type { Clock, Duplicator, DuplicationResult } from '../domain/ports.js';
import type { DuplicationJob } from '../domain/types.js';
import { RepeatedFailureLog } from '../failure-log.js';
import type { WorkerLogger } from '../jobs/worker.js';
import type { UpstreamCircuit } from './upstream-circuit.js';

/**
 * How long a job waits when the pacing store cannot be asked for a slot: long enough that the workers do not
 * spin on an outage, short enough that jobs resume within seconds of its end.
 */
const PACING_STORE_RETRY_MS = 5000;

/** Braze's request body, exactly: optional fields are left out rather than sent as null. */
function brazeDuplicateBody(job: DuplicationJob): Record<string, unknown> {
  return {
    campaign_id: job.sourceCampaignId,
    name: job.name,
    ...(job.description === null ? {} : { description: job.description }),
    ...(job.tagNames === null ? {} : { tag_names: job.tagNames }),
  };
}

/** What an upstream id may look like to be kept: Braze's are UUIDs; nothing long, nothing but visible ASCII. */
const UPSTREAM_ID = /^[\x21-\x7e]{1,128}$/;

/**
 * Braze answers 202 without naming the copy; an upstream that does name it, plausibly, is believed. An id holding
 * the key (an upstream echoing what it received) is not an id to keep: it would carry the key into the job.
 */
function copyId(body: unknown, job: DuplicationJob, client: BrazeClient): string | null {
  if (typeof body !== 'object' || body === null) return null;
  const { new_campaign_id: named, campaign_id: echoed } = body as Record<string, unknown>;
  const plausible = (id: unknown): id is string => typeof id === 'string' && UPSTREAM_ID.test(id) && !client.holdsKey(id);
  if (plausible(named)) return named;
  if (plausible(echoed) && echoed !== job.sourceCampaignId) return echoed;
  return null;
}

/**
 * Runs a job against the upstream's `POST /campaigns/duplicate`. Each call is at least once: a call whose answer
 * was lost (timeout, dropped connection) is sent again, which the upstream may carry out twice.
 */
export class BrazeDuplicator implements Duplicator {
  readonly actsOutsideStore = true;

  /** Every job meets a pacing store outage, again at each try: said when it starts, as a reminder, and when it ends. */
  private readonly pacingFailures: RepeatedFailureLog;
  /** The same for a command the pacing store's user is not granted, which no wait ends: an operator has to grant it. */
  private readonly pacingRefusals: RepeatedFailureLog;

  constructor(
    private readonly client: BrazeClient,
    private readonly pacer: UpstreamPacer,
    /** Holds every call while the upstream is down, rather than spending each job's attempts on it. */
    private readonly circuit: UpstreamCircuit,
    logger: WorkerLogger,
    clock: Clock,
  ) {
    this.pacingFailures = new RepeatedFailureLog(logger, clock, {
      failed: 'the upstream pacing store is unavailable; upstream calls are held until it is back',
      stillFailing: 'the upstream pacing store is still unavailable; upstream calls are held',
      recovered: 'the upstream pacing store is back; upstream calls resume',
    });
    this.pacingRefusals = new RepeatedFailureLog(logger, clock, {
      failed: 'the upstream pacing store refuses the gateway a command; upstream calls are held until it is granted',
      stillFailing: 'the upstream pacing store still refuses the gateway a command; upstream calls are held',
      recovered: 'the upstream pacing store runs the gateway\'s commands again; upstream calls resume',
    });
  }

  async duplicate(job: DuplicationJob): Promise<DuplicationResult> {
    // Asked first: a job held by the circuit takes no pacing slot.
    const heldMs = this.circuit.admit(job);
    if (heldMs > 0) return { kind: 'deferred', retryAfterMs: heldMs, waitsFor: 'upstream' };
    let waitMs: number;
    try {
      waitMs = await this.pacer.take();
    } catch (error) {
      this.circuit.release(job);
      // Without the shared pace, each instance would send as if alone: nothing is sent until the store is back.
      // The job was not tried, so it waits without spending an attempt, however long the outage lasts.
      (error instanceof CommandRefusedError ? this.pacingRefusals : this.pacingFailures).failed(limitsUnavailable(error));
      return { kind: 'deferred', retryAfterMs: PACING_STORE_RETRY_MS, waitsFor: 'pacing store' };
    }
    this.pacingFailures.succeeded();
    this.pacingRefusals.succeeded();
    if (waitMs > 0) {
      this.circuit.release(job);
      return { kind: 'deferred', retryAfterMs: waitMs, waitsFor: 'slot' };
    }

    let response: UpstreamResponse;
    try {
      response = await this.client.call('POST', '/campaigns/duplicate', { json: brazeDuplicateBody(job), job });
    } catch (error) {
      // The client classifies every failure it knows; one it throws says nothing of the upstream.
      this.circuit.release(job);
      throw error;
    }
    const probeFailedMs = this.circuit.answered(job, response);
    switch (response.kind) {
      case 'ok':
        return {
          kind: 'succeeded',
          resultCampaignId: copyId(response.body, job, this.client),
          details: {
            upstreamStatus: response.status,
            ...(response.message === undefined ? {} : { upstreamMessage: response.message }),
            ...(response.errors === undefined ? {} : { upstreamErrors: response.errors }),
          },
        };
      case 'rejected':
        // Refused, or its certificate was, before the request was sent: nothing was made.
        return { kind: 'permanent', error: response.error, mayHaveActed: false };
      case 'unavailable': {
        let retryAfterMs = probeFailedMs > 0 ? Math.max(response.retryAfterMs ?? 0, probeFailedMs) : response.retryAfterMs;
        if (response.status === 429) {
          // Best effort: the pause keeps every job back, this one too, often past the time Braze gave (to the end of
          // the gateway's own window). The job is due when the hold ends, so its due time is when it is really tried.
          const heldMs = await this.pacer.pause(retryAfterMs ?? 0).catch(() => undefined);
          if (heldMs !== undefined) retryAfterMs = Math.max(retryAfterMs ?? 0, heldMs);
        }
        // A 429 refused the call; a 5xx (a proxy's, after Braze acted) or a lost answer may hide a copy made.
        const mayHaveActed = response.status !== 429 && !response.unsent;
        return { kind: 'transient', error: response.error, mayHaveActed, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
      }
    }
  }
}
