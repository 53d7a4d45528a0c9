-- A payment the gateway did not answer within the authorization deadline is declined as
-- GATEWAY_UNAVAILABLE, so its order is cancelled instead of waiting on.
ALTER TABLE payments DROP CONSTRAINT payments_decline_reason_check;
ALTER TABLE payments ADD CONSTRAINT payments_decline_reason_check
    CHECK (decline_reason IN ('CARD_DECLINED', 'INSUFFICIENT_FUNDS', 'AMOUNT_ABOVE_LIMIT',
                              'INVALID_AMOUNT', 'INVALID_TOKEN', 'GATEWAY_UNAVAILABLE'));
