//! Growing the members' volumes when `spec.storage.size` grows: which claims to
//! expand, and the `VolumesExpanded` condition. Pure, like the planners.
//!
//! Why claims and not the StatefulSet: a StatefulSet's volume claim template
//! cannot be changed once it exists (the API server refuses the whole update),
//! so the StatefulSet keeps the size and class it was created with (see
//! [`crate::resources::ClaimTemplate`]), and a bigger size reaches each member
//! by raising its claim's request, which Kubernetes expands in place where the
//! StorageClass allows it (`allowVolumeExpansion: true`; otherwise the API
//! server refuses the request and the condition says so). A member added later
//! gets a volume at the template's size and is expanded the same way.
//! Shrinking and another class cannot be done at all; the CRD's validation
//! rules refuse them before they reach the operator.

use std::collections::BTreeMap;

/// The condition type reporting volume expansion.
pub const CONDITION: &str = "VolumesExpanded";

/// One member volume's size: what its claim asks for and, once bound, what
/// it has (`status.capacity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSize {
    pub requested: Option<String>,
    pub capacity: Option<String>,
}

/// Bytes in a Kubernetes quantity (`2Gi`, `500M`, `1.5Ti`, `1e9`, `1073741824`);
/// None if it is not one. Precise enough to compare volume sizes.
pub fn quantity_bytes(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    (number >= 0.0).then_some(number * multiplier)
}

fn below(size: Option<&String>, target: f64) -> bool {
    size.and_then(|s| quantity_bytes(s))
        .is_none_or(|bytes| bytes < target)
}

/// Ordinals whose claim asks for less than `size`: their request is raised.
/// Only bound claims (with a capacity): Kubernetes refuses to change a claim's
/// request before it is bound, and binds it at the size it asked for.
pub fn claims_to_expand(size: &str, claims: &BTreeMap<u32, ClaimSize>) -> Vec<u32> {
    let Some(target) = quantity_bytes(size) else {
        return Vec::new();
    };
    claims
        .iter()
        .filter(|(_, c)| c.requested.is_some() && c.capacity.is_some())
        .filter(|(_, c)| below(c.requested.as_ref(), target))
        .map(|(&ordinal, _)| ordinal)
        .collect()
}

/// The `VolumesExpanded` condition: (status, reason, message). `refused`:
/// why the API server refused to raise a claim this reconcile.
pub fn condition(
    size: &str,
    claims: &BTreeMap<u32, ClaimSize>,
    refused: Option<&str>,
) -> (bool, &'static str, String) {
    if let Some(why) = refused {
        return (
            false,
            "ExpansionRefused",
            format!("raising the volumes to {size} was refused: {why}"),
        );
    }
    let Some(target) = quantity_bytes(size) else {
        return (
            false,
            "InvalidSize",
            format!("spec.storage.size {size:?} is not a quantity"),
        );
    };
    // A claim not bound yet has no capacity: what it asks for is what it gets.
    let smaller: Vec<String> = claims
        .iter()
        .filter(|(_, c)| below(c.capacity.as_ref().or(c.requested.as_ref()), target))
        .map(|(ordinal, c)| {
            format!(
                "{ordinal}: {}",
                c.capacity.as_deref().unwrap_or("not bound yet")
            )
        })
        .collect();
    if smaller.is_empty() {
        (
            true,
            "AtSpecSize",
            format!("every member volume has at least {size}"),
        )
    } else {
        (
            false,
            "Expanding",
            format!(
                "{} of {} volumes below {size} (ordinal: capacity) {}",
                smaller.len(),
                claims.len(),
                smaller.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(requested: &str, capacity: Option<&str>) -> ClaimSize {
        ClaimSize {
            requested: Some(requested.to_string()),
            capacity: capacity.map(String::from),
        }
    }

    #[test]
    fn quantities_in_binary_decimal_and_exponent_forms() {
        assert_eq!(quantity_bytes("2Gi"), Some(2.0 * 1024f64.powi(3)));
        assert_eq!(quantity_bytes("1.5Ki"), Some(1536.0));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
        assert_eq!(quantity_bytes("1e3"), Some(1000.0));
        assert_eq!(quantity_bytes("1073741824"), quantity_bytes("1Gi"));
        assert_eq!(quantity_bytes("2GB"), None);
        assert_eq!(quantity_bytes("big"), None);
        assert_eq!(quantity_bytes(""), None);
    }

    #[test]
    fn only_claims_asking_for_less_are_raised() {
        let claims = BTreeMap::from([
            (0, claim("2Gi", Some("2Gi"))),
            (1, claim("3Gi", Some("2Gi"))),
            (2, claim("3072Mi", Some("3Gi"))),
            (3, claim("4Gi", Some("4Gi"))),
            (4, claim("2Gi", None)),
        ]);
        assert_eq!(
            claims_to_expand("3Gi", &claims),
            vec![0],
            "4 is not bound yet"
        );
        assert_eq!(claims_to_expand("not a size", &claims), Vec::<u32>::new());
    }

    #[test]
    fn the_condition_waits_for_every_capacity() {
        let mut claims = BTreeMap::from([
            (0, claim("3Gi", Some("3Gi"))),
            (1, claim("3Gi", Some("2Gi"))),
            (2, claim("2Gi", None)),
            (3, claim("3Gi", None)),
        ]);
        let (ok, reason, message) = condition("3Gi", &claims, None);
        assert!(!ok);
        assert_eq!(reason, "Expanding");
        assert!(
            message.contains("2 of 4")
                && message.contains("1: 2Gi")
                && message.contains("2: not bound yet"),
            "{message}"
        );
        claims.insert(1, claim("3Gi", Some("3Gi")));
        claims.insert(2, claim("3Gi", Some("4Gi")));
        assert_eq!(condition("3Gi", &claims, None).1, "AtSpecSize");
        let (ok, reason, message) = condition("3Gi", &claims, Some("class forbids it"));
        assert!(!ok);
        assert_eq!(reason, "ExpansionRefused");
        assert!(message.contains("class forbids it"));
    }
}
