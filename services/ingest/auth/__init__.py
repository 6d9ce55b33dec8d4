"""Who may call the FHIR API: SMART Backend Services tokens, scopes, tenancy, the audit trail."""
