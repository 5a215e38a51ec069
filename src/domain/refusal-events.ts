// Refusal events: PERMISSION_DENIED and API_KEY_REJECTED, recorded within each key's budget of them, and the count
// of those left unrecorded past it, which the next one recorded carries.
import type { Permission } from './permissions.js';
import { requestEvent, secretUsed } from './request-events.js';
import type { GatewayServiceDeps } from './service.js';
import type { NewSecurityEvent, Principal, SecurityEventType } from './types.js';

/** The refusal events a key's budget bounds, the only events left unrecorded. */
export const REFUSAL_EVENT_TYPES = ['PERMISSION_DENIED', 'API_KEY_REJECTED'] as const satisfies readonly SecurityEventType[];
export type RefusalEventType = (typeof REFUSAL_EVENT_TYPES)[number];

export class RefusalEvents {
  /** Per event type and budget (`type keyId`, `type keyId:previous`), the refusals not recorded since the budget's last event of the type (this instance's). */
  private readonly unrecordedRefusals = new Map<string, number>();

  constructor(private readonly deps: Pick<GatewayServiceDeps, 'store' | 'clock' | 'refusalEvents' | 'onEventUnrecorded'>) {}

  /** PERMISSION_DENIED: a permission the key lacks, or an address outside its allowlist. */
  async recordDenial(principal: Principal, reason: { permission: Permission } | { reason: 'ip_not_allowed' }): Promise<void> {
    await this.recordRefusal(principal, requestEvent(this.deps.clock, principal, 'PERMISSION_DENIED', { details: { ...reason, ...secretUsed(principal) } }));
  }

  /**
   * One refusal event (PERMISSION_DENIED, API_KEY_REJECTED) within its budget, which both types share: the key's
   * for its current secret, and another for its previous one, so that an old secret sent again and again after a
   * rotation cannot leave the refusals of the current one unrecorded. The first event of a type recorded after
   * refusals past the budget says how many of that type there were (`unrecordedBefore`), so the log keeps their
   * number without their rows; so does one whose write failed. Whether it was written.
   */
  async recordRefusal(principal: Principal, event: NewSecurityEvent & { type: RefusalEventType }): Promise<boolean> {
    const budget = principal.secret === 'previous' ? `${principal.keyId}:previous` : principal.keyId;
    const counter = `${event.type} ${budget}`;
    // `refusals`: this one, and those before it that the event would have counted.
    const leaveUnrecorded = (refusals: number) => {
      this.unrecordedRefusals.set(counter, (this.unrecordedRefusals.get(counter) ?? 0) + refusals);
      this.deps.onEventUnrecorded?.(event.type);
    };
    if (!(await this.deps.refusalEvents.take(budget)).granted) {
      leaveUnrecorded(1);
      return false;
    }
    const unrecordedBefore = this.unrecordedRefusals.get(counter);
    this.unrecordedRefusals.delete(counter);
    try {
      await this.deps.store.insertEvent(unrecordedBefore === undefined ? event : { ...event, details: { ...event.details, unrecordedBefore } });
    } catch (error) {
      leaveUnrecorded((unrecordedBefore ?? 0) + 1);
      throw error;
    }
    return true;
  }
}
