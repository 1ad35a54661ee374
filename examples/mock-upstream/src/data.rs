//! Deterministic Zendesk-shaped records: the same id always yields the same ticket or user, so tests
//! can assert on content and exports are repeatable.

use serde_json::{json, Value};

/// splitmix64: a cheap, well-mixed hash so generated fields look varied.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick<'a>(id: u64, salt: u64, options: &[&'a str]) -> &'a str {
    options[(mix(id ^ salt) % options.len() as u64) as usize]
}

const FIRST: &[&str] = &[
    "Ana", "Bruno", "Chloé", "Dmitri", "Emma", "Farid", "Giulia", "Hugo", "Inès", "Jonas",
];
const LAST: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Rossi", "Schmidt", "Garcia", "Nowak", "Lefebvre",
];
const SUBJECTS: &[&str] = &[
    "Order not delivered",
    "Refund request for damaged drill",
    "Wrong size of tiles received",
    "Cannot log in to my account",
    "Invoice needed for company purchase",
    "Parcel marked delivered but missing",
    "Change delivery address",
    "Warranty claim: lawn mower",
];
const STATUSES: &[&str] = &["new", "open", "pending", "hold", "solved", "closed"];
const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const CHANNELS: &[&str] = &["email", "web", "api", "chat"];

fn timestamp(seconds_after_2025: u64) -> String {
    // Days since 2025-01-01, rendered without a date library: good enough for plausible data.
    let days = seconds_after_2025 / 86_400;
    let secs = seconds_after_2025 % 86_400;
    let month = (days / 28) % 12 + 1;
    let day = days % 28 + 1;
    let year = 2025 + days / 336;
    format!(
        "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

pub fn ticket(base: &str, id: u64) -> Value {
    let created = id * 3_517;
    let requester = 10_000 + mix(id) % 5_000;
    let subject = pick(id, 1, SUBJECTS);
    json!({
        "url": format!("{base}/api/v2/tickets/{id}.json"),
        "id": id,
        "external_id": null,
        "via": {"channel": pick(id, 2, CHANNELS), "source": {"from": {}, "to": {}, "rel": null}},
        "created_at": timestamp(created),
        "updated_at": timestamp(created + 7_200),
        "generated_timestamp": created + 7_200,
        "type": pick(id, 3, &["question", "incident", "problem", "task"]),
        "subject": subject,
        "raw_subject": subject,
        // What customers write in free text: a phone number (the requester's), for the free-text
        // patterns of a redaction to find.
        "description": format!(
            "Hello, I placed order #{} and need help: {}. Please call me back on my mobile +33 6 {:02} {:02} {:02} {:02}. Thanks, {} {}",
            100_000 + id, subject.to_lowercase(), requester % 100, (requester / 100) % 100, id % 100, (id / 100) % 100,
            pick(requester, 4, FIRST), pick(requester, 5, LAST)
        ),
        "priority": pick(id, 6, PRIORITIES),
        "status": pick(id, 7, STATUSES),
        "recipient": "support@example-marketplace.com",
        "requester_id": requester,
        "submitter_id": requester,
        "assignee_id": 900 + mix(id ^ 8) % 40,
        "organization_id": null,
        "group_id": 360_000 + mix(id ^ 9) % 6,
        "collaborator_ids": [],
        "follower_ids": [],
        "email_cc_ids": [],
        "problem_id": null,
        "has_incidents": false,
        "is_public": true,
        "due_at": null,
        "tags": ["marketplace", pick(id, 10, &["delivery", "refund", "account", "invoice"])],
        "custom_fields": [{"id": 27_642, "value": pick(id, 11, &["fr", "es", "it", "de"])}],
        "satisfaction_rating": null,
        "custom_status_id": 1,
        "fields": [{"id": 27_642, "value": pick(id, 11, &["fr", "es", "it", "de"])}],
        "ticket_form_id": 1_500,
        "brand_id": 1_200,
        "allow_channelback": false,
        "allow_attachments": true
    })
}

pub fn user(base: &str, id: u64) -> Value {
    let first = pick(id, 4, FIRST);
    let last = pick(id, 5, LAST);
    let created = id * 1_733;
    json!({
        "id": id,
        "url": format!("{base}/api/v2/users/{id}.json"),
        "name": format!("{first} {last}"),
        "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), id),
        "created_at": timestamp(created),
        "updated_at": timestamp(created + 86_400),
        "time_zone": "Paris",
        "iana_time_zone": "Europe/Paris",
        "phone": format!("+33 6 {:02} {:02} {:02} {:02}", mix(id) % 100, mix(id ^ 1) % 100, mix(id ^ 2) % 100, mix(id ^ 3) % 100),
        "shared_phone_number": false,
        "photo": null,
        "locale_id": 1_005,
        "locale": "fr",
        "organization_id": null,
        "role": if id < 1_000 { "agent" } else { "end-user" },
        "verified": true,
        "external_id": null,
        "tags": [],
        "alias": "",
        "active": true,
        "shared": false,
        "shared_agent": false,
        "last_login_at": timestamp(created + 172_800),
        "two_factor_auth_enabled": false,
        "signature": null,
        "details": "",
        "notes": "",
        "role_type": null,
        "custom_role_id": null,
        "moderator": false,
        "ticket_restriction": "requested",
        "only_private_comments": false,
        "restricted_agent": true,
        "suspended": false,
        "default_group_id": null,
        "report_csv": false,
        "user_fields": {"loyalty_tier": pick(id, 12, &["none", "silver", "gold"])}
    })
}
