-- Per-endpoint rate limits for the whole worker fleet (API.md, `rate_limit_per_second`): one
-- GCRA row per limited endpoint. `tat` (theoretical arrival time) is when the endpoint's next
-- request may start; every send reserves its start time by moving `tat` on by 1/limit seconds
-- in one UPDATE (`endpoint_rates::reserve`). Rows appear on an endpoint's first limited send;
-- an endpoint without a limit never has one.
CREATE TABLE endpoint_rates (
    organization_id uuid NOT NULL,
    endpoint_id     uuid NOT NULL,
    tat             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, endpoint_id),
    FOREIGN KEY (organization_id, endpoint_id) REFERENCES endpoints (organization_id, id) ON DELETE CASCADE
);
