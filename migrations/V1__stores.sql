-- The stores the platform provisions. See migrations/README.md: never edit a
-- migration once it has been applied anywhere; add a new file instead.
CREATE TABLE stores (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 3 AND 100),
    status      text        NOT NULL CHECK (status IN ('PROVISIONING', 'ACTIVE', 'DECOMMISSIONED')),
    config      jsonb       NOT NULL DEFAULT '{}',
    version     integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
