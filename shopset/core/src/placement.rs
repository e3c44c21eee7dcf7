//! Which ShopSet a new shop goes to: the written policy behind `shopctl shop add`, as a pure
//! function of the Tiers and ShopSets of one namespace, so the controller, `shopctl` and a
//! person's script get the same answer.
//!
//! The policy, in order:
//! 1. **Tier.** The one asked for; else the tier where new shops start: the Tier without
//!    `spec.promotion` (the lowest). Several such Tiers: the caller must name one.
//! 2. **Duplicates.** A shop served by any ShopSet of the namespace is refused, naming where.
//! 3. **ShopSet.** Among the tier's ShopSets with room (a ShopSet without `spec.capacity` holds at
//!    most [`MAX_SHOPS`]; a ShopSet wholly in maintenance takes no new shops), the one in the
//!    failure domain serving the fewest shops of the tier (failure domains kept balanced; a
//!    destination without labels is a domain of its own, as `shopctl doctor` counts them), then
//!    the one with the most free capacity, then the first by name (deterministic).
//! 4. **Growth.** When none has room, the next ShopSet by the naming convention (below), on the
//!    tier's destination whose failure domain serves the fewest shops (then the one with fewest
//!    shops, then by name), copying configuration, capacity, replicas and images from the last
//!    ShopSet of the tier by name. Only when asked to grow; else refused, naming the proposal.
//!
//! **Naming convention.** The tier's ShopSet names that end in a number (`tier-0-cell-0007`) are
//! grouped by what precedes the number; the largest group (ties: the first prefix by name) gives
//! the prefix, and the next name is its highest number plus one, zero-padded to the same width
//! (`tier-0-cell-0008`). When no name ends in a number, the next is the last name by name followed
//! by `-2` (`canary-eu` -> `canary-eu-2`). A name any ShopSet of the namespace already has is
//! skipped.
//!
//! Cost: [`Planner::new`] is linear in the ShopSets and their shops; each [`Planner::place`] is
//! linear in the ShopSets of one tier (and O(1) for the duplicate check). Placing many shops in
//! one go is one `Planner` and many `place` calls: each placement is recorded, so the next one
//! sees it.

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;

use crate::api::{NamedDestination, ShopSet, Tier};
use crate::fleet::{destination_of, find};
use crate::rules::{self, MAX_SHOPS};
use crate::validation::dns_label_problem;

/// Why a shop could not be placed. Each message names the resource, the field or flag, the value
/// and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("shop {shop:?}: {problem}; fix: {fix}")]
    InvalidShop { shop: String, problem: &'static str, fix: &'static str },
    #[error(
        "shop {shop:?}: already served by ShopSet/{shopset} (tier {tier}, spec.shops); fix: to move it, `shopctl shop move {shop} --to SHOPSET`; to see where it is, `shopctl shop where {shop}`"
    )]
    Duplicate { shop: String, shopset: String, tier: String },
    #[error("Tier/{tier}: --tier {tier:?} names no Tier of the manifests (Tiers: {known}); fix: name one of them")]
    UnknownTier { tier: String, known: String },
    #[error("no Tier without spec.promotion: no tier where new shops start (Tiers: {known}); fix: pass --tier TIER")]
    NoStartTier { known: String },
    #[error(
        "Tiers {tiers} have no spec.promotion: each could be where new shops start; fix: pass --tier with one of them"
    )]
    SeveralStartTiers { tiers: String },
    #[error(
        "Tier/{tier}: every ShopSet of the tier is full ({shopsets} ShopSets at spec.capacity, or in maintenance); fix: pass --grow to create ShopSet/{next}{on}, or raise spec.capacity of one of them"
    )]
    Full { tier: String, shopsets: usize, next: String, on: String },
    #[error(
        "Tier/{tier}: has no ShopSet, so there is nothing to place the shop in or copy a new ShopSet from; fix: write the tier's first ShopSet by hand"
    )]
    NoShopSet { tier: String },
    #[error(
        "ShopSet/{name}: the next name by the convention {problem}; fix: rename the tier's ShopSets to a shorter numbered convention, or add the ShopSet by hand"
    )]
    BadName { name: String, problem: String },
    #[error("ShopSet/{shopset}: --to names no ShopSet of the manifests; fix: name an existing ShopSet")]
    UnknownShopSet { shopset: String },
    #[error("shop {shop:?}: served by no ShopSet (spec.shops); fix: add it with `shopctl shop add {shop}`")]
    NotServed { shop: String },
    #[error(
        "ShopSet/{shopset}: full (spec.capacity {capacity}, serving {shops}); fix: raise its spec.capacity, or move the shop to another ShopSet"
    )]
    ShopSetFull { shopset: String, capacity: usize, shops: usize },
}

/// Where a shop goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub shop: String,
    pub shopset: String,
    pub tier: String,
    /// The Tier destination (`spec.destination`) of the ShopSet; None: the Tier's default.
    pub destination: Option<String>,
    /// Its failure domain; empty when it has none.
    pub failure_domain: BTreeMap<String, String>,
    /// Set when the ShopSet is a new one (growth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grown: Option<Growth>,
}

/// A new ShopSet that placement creates: its configuration, capacity, replicas and images are
/// those of `copied_from`; its `spec.destination` is the placement's `destination`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Growth {
    pub copied_from: String,
}

impl Growth {
    /// The new ShopSet of `placement`, from `sibling` (the ShopSet named by `copied_from`).
    pub fn shopset(placement: &Placement, sibling: &ShopSet) -> ShopSet {
        let mut spec = sibling.spec.clone();
        spec.shops = vec![placement.shop.clone()];
        spec.destination = placement.destination.clone();
        spec.maintenance = None;
        // Its own namespace: a copied one would make two cells deploy into one namespace.
        spec.namespace = None;
        let mut ss = ShopSet::new(&placement.shopset, spec);
        ss.metadata.namespace = sibling.metadata.namespace.clone();
        ss
    }
}

/// A failure domain as placement tells them apart, as `shopctl doctor` does: a destination's
/// labels; a destination without labels is a domain of its own, by its name (a cluster fails on
/// its own, and nothing says it shares a zone with another); the Tier's single
/// `spec.argocd.destination` is one more. The labels, as a placement reports them, come first.
type Domain = (BTreeMap<String, String>, Option<String>);

/// The failure domain of a ShopSet's destination ([`Domain`]); None: the Tier's single one.
fn domain_of(destination: Option<&NamedDestination>) -> Domain {
    match destination {
        Some(d) if d.failure_domain.is_empty() => (BTreeMap::new(), Some(d.name.clone())),
        Some(d) => (d.failure_domain.clone(), None),
        None => (BTreeMap::new(), None),
    }
}

/// One ShopSet as placement sees it.
#[derive(Debug, Clone)]
struct Cell {
    name: String,
    tier: String,
    destination: Option<String>,
    /// Index into [`Planner::domains`].
    domain: usize,
    shops: usize,
    capacity: usize,
    /// Wholly in maintenance: takes no new shops.
    closed: bool,
    /// The ShopSet of the input it is (or, for a grown one, was copied from).
    source: usize,
}

/// The tiers and ShopSets of one namespace, with the placements made so far.
pub struct Planner<'a> {
    tiers: BTreeMap<String, &'a Tier>,
    input: &'a [ShopSet],
    cells: Vec<Cell>,
    by_name: HashMap<String, usize>,
    by_tier: HashMap<String, Vec<usize>>,
    /// Shop ID -> its cell.
    served: HashMap<String, usize>,
    /// Every failure domain seen (the Tier's single destination first), and its index.
    domains: Vec<Domain>,
    domain_ids: HashMap<Domain, usize>,
    /// Tier -> shops served per failure domain (by index).
    domain_load: HashMap<String, Vec<usize>>,
}

/// Places `shop`: [`Planner::new`] then [`Planner::place`], for one shop.
///
/// # Errors
/// See [`PlacementError`].
pub fn place(
    tiers: &[Tier],
    shopsets: &[ShopSet],
    shop: &str,
    tier: Option<&str>,
    grow: bool,
) -> Result<Placement, PlacementError> {
    Planner::new(tiers, shopsets).place(shop, tier, grow)
}

impl<'a> Planner<'a> {
    /// The Tiers and ShopSets of one namespace (the caller filters by namespace).
    pub fn new(tiers: &'a [Tier], shopsets: &'a [ShopSet]) -> Self {
        let tiers: BTreeMap<String, &Tier> = tiers.iter().map(|t| (t.name_any(), t)).collect();
        let mut planner = Planner {
            tiers,
            input: shopsets,
            cells: Vec::with_capacity(shopsets.len()),
            by_name: HashMap::with_capacity(shopsets.len()),
            by_tier: HashMap::new(),
            served: HashMap::new(),
            domains: Vec::new(),
            domain_ids: HashMap::new(),
            domain_load: HashMap::new(),
        };
        planner.domain_id(&domain_of(None));
        for (source, ss) in shopsets.iter().enumerate() {
            // Where it deploys, as the renderer and `shopctl doctor` tell it (an invalid
            // destination, refused by the checks before any placement, counts as the Tier's own).
            let destination = planner.tiers.get(&ss.spec.tier).copied().and_then(|t| {
                let name = destination_of(t, ss).ok()?.name?;
                find(t, name)
            });
            let domain = planner.domain_id(&domain_of(destination));
            let cell = Cell {
                name: ss.name_any(),
                tier: ss.spec.tier.clone(),
                destination: ss.spec.destination.clone(),
                domain,
                shops: ss.spec.shops.len(),
                capacity: ss.spec.capacity.map_or(MAX_SHOPS, |c| (c as usize).min(MAX_SHOPS)),
                closed: ss.wholly_in_maintenance(),
                source,
            };
            let index = planner.cells.len();
            for shop in &ss.spec.shops {
                planner.served.entry(shop.clone()).or_insert(index);
            }
            planner.add_cell(cell);
        }
        planner
    }

    fn add_cell(&mut self, cell: Cell) {
        let index = self.cells.len();
        self.by_name.insert(cell.name.clone(), index);
        self.by_tier.entry(cell.tier.clone()).or_default().push(index);
        self.add_load(&cell.tier.clone(), cell.domain, cell.shops);
        self.cells.push(cell);
    }

    fn domain_id(&mut self, domain: &Domain) -> usize {
        if let Some(&id) = self.domain_ids.get(domain) {
            return id;
        }
        self.domains.push(domain.clone());
        self.domain_ids.insert(domain.clone(), self.domains.len() - 1);
        self.domains.len() - 1
    }

    fn add_load(&mut self, tier: &str, domain: usize, shops: usize) {
        let loads = self.domain_load.entry(tier.to_string()).or_default();
        if loads.len() <= domain {
            loads.resize(domain + 1, 0);
        }
        loads[domain] += shops;
    }

    fn load(&self, tier: &str, domain: usize) -> usize {
        self.domain_load.get(tier).and_then(|l| l.get(domain)).copied().unwrap_or(0)
    }

    /// The tier where new shops start, or the one named.
    ///
    /// # Errors
    /// An unknown tier; no or several Tiers without `spec.promotion`.
    pub fn start_tier(&self, tier: Option<&str>) -> Result<String, PlacementError> {
        let known = || self.tiers.keys().cloned().collect::<Vec<_>>().join(", ");
        if let Some(tier) = tier {
            return if self.tiers.contains_key(tier) {
                Ok(tier.to_string())
            } else {
                Err(PlacementError::UnknownTier { tier: tier.into(), known: known() })
            };
        }
        let lowest: Vec<&String> =
            self.tiers.iter().filter(|(_, t)| t.spec.promotion.is_none()).map(|(n, _)| n).collect();
        match lowest.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PlacementError::NoStartTier { known: known() }),
            many => Err(PlacementError::SeveralStartTiers {
                tiers: many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Where `shop` is served, if anywhere: (ShopSet, tier).
    pub fn served_by(&self, shop: &str) -> Option<(&str, &str)> {
        self.served.get(shop).map(|&i| (self.cells[i].name.as_str(), self.cells[i].tier.as_str()))
    }

    /// Places `shop` by the policy of this module and records it, so that later calls see it.
    ///
    /// # Errors
    /// See [`PlacementError`]; nothing is recorded then.
    pub fn place(&mut self, shop: &str, tier: Option<&str>, grow: bool) -> Result<Placement, PlacementError> {
        if let Some(problem) = rules::problem(rules::SHOP_ID, shop) {
            return Err(PlacementError::InvalidShop {
                shop: shop.into(),
                problem,
                fix: "use letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 63 characters",
            });
        }
        let tier = self.start_tier(tier)?;
        if let Some((shopset, tier)) = self.served_by(shop) {
            return Err(PlacementError::Duplicate { shop: shop.into(), shopset: shopset.into(), tier: tier.into() });
        }
        let members: &[usize] = self.by_tier.get(&tier).map(Vec::as_slice).unwrap_or_default();
        if members.is_empty() {
            return Err(PlacementError::NoShopSet { tier });
        }
        // (domain load, -free, name): the least loaded failure domain, then the most room, then by name.
        let mut best: Option<(usize, usize, &str, usize)> = None;
        let loads: &[usize] = self.domain_load.get(&tier).map(Vec::as_slice).unwrap_or_default();
        for &i in members {
            let cell = &self.cells[i];
            if cell.closed || cell.shops >= cell.capacity {
                continue;
            }
            let load = loads.get(cell.domain).copied().unwrap_or(0);
            let free = cell.capacity - cell.shops;
            let better = match best {
                None => true,
                Some((l, f, n, _)) => {
                    (load, std::cmp::Reverse(free), cell.name.as_str()) < (l, std::cmp::Reverse(f), n)
                }
            };
            if better {
                best = Some((load, free, cell.name.as_str(), i));
            }
        }
        let mut created = false;
        let index = match best {
            Some((_, _, _, i)) => i,
            None => {
                let (name, destination, sibling) = self.proposal(&tier)?;
                if !grow {
                    let on = destination.map(|d| format!(" on destination {d}")).unwrap_or_default();
                    return Err(PlacementError::Full { tier, shopsets: members.len(), next: name, on });
                }
                let on = destination.as_deref().and_then(|d| find(self.tiers[&tier], d));
                let domain = self.domain_id(&domain_of(on));
                let source = self.cells[sibling].source;
                let capacity = self.input[source].spec.capacity.map_or(MAX_SHOPS, |c| (c as usize).min(MAX_SHOPS));
                self.add_cell(Cell {
                    name,
                    tier: tier.clone(),
                    destination,
                    domain,
                    shops: 0,
                    capacity,
                    closed: false,
                    source,
                });
                created = true;
                self.cells.len() - 1
            }
        };
        // Only the call that creates a ShopSet reports it: later ones place into it like any other.
        let grown = created.then(|| Growth { copied_from: self.input[self.cells[index].source].name_any() });
        let cell = &mut self.cells[index];
        cell.shops += 1;
        let placement = Placement {
            shop: shop.into(),
            shopset: cell.name.clone(),
            tier: tier.clone(),
            destination: cell.destination.clone(),
            failure_domain: self.domains[cell.domain].0.clone(),
            grown,
        };
        let domain = cell.domain;
        self.add_load(&tier, domain, 1);
        self.served.insert(shop.into(), index);
        Ok(placement)
    }

    /// The next ShopSet of `tier` by the naming convention, its destination, and the cell to copy.
    fn proposal(&self, tier: &str) -> Result<(String, Option<String>, usize), PlacementError> {
        let members = self.by_tier.get(tier).map(Vec::as_slice).unwrap_or_default();
        // The last by name is the sibling to copy.
        let sibling = *members
            .iter()
            .max_by(|&&a, &&b| self.cells[a].name.cmp(&self.cells[b].name))
            .ok_or_else(|| PlacementError::NoShopSet { tier: tier.into() })?;
        let name = next_name(members.iter().map(|&i| self.cells[i].name.as_str()), |n| self.by_name.contains_key(n));
        if let Some(problem) = dns_label_problem(&name) {
            return Err(PlacementError::BadName { name, problem });
        }
        let destinations = &self.tiers[tier].spec.argocd.destinations;
        let mut shops_on: HashMap<&str, usize> = HashMap::new();
        for &i in members {
            if let Some(d) = &self.cells[i].destination {
                *shops_on.entry(d.as_str()).or_default() += self.cells[i].shops;
            }
        }
        let destination = destinations
            .iter()
            .min_by_key(|d| {
                let load = self.domain_ids.get(&domain_of(Some(d))).map_or(0, |&id| self.load(tier, id));
                (load, shops_on.get(d.name.as_str()).copied().unwrap_or(0), &d.name)
            })
            .map(|d| d.name.clone());
        Ok((name, destination, sibling))
    }

    /// The new ShopSet of a placement that grew the tier (None for an existing ShopSet): a copy
    /// of its sibling serving the placed shop, as [`Growth::shopset`] writes it.
    pub fn new_shopset(&self, placement: &Placement) -> Option<ShopSet> {
        placement.grown.as_ref()?;
        let &index = self.by_name.get(&placement.shopset)?;
        Some(Growth::shopset(placement, &self.input[self.cells[index].source]))
    }

    /// Checks that `shop` can move to ShopSet `to`: it is served, `to` exists and has room.
    /// Returns the ShopSet that serves it now (equal to `to` when there is nothing to move).
    ///
    /// # Errors
    /// [`PlacementError::NotServed`], [`PlacementError::UnknownShopSet`],
    /// [`PlacementError::ShopSetFull`].
    pub fn check_move(&self, shop: &str, to: &str) -> Result<String, PlacementError> {
        let &target = self.by_name.get(to).ok_or_else(|| PlacementError::UnknownShopSet { shopset: to.into() })?;
        let (from, _) = self.served_by(shop).ok_or_else(|| PlacementError::NotServed { shop: shop.into() })?;
        let cell = &self.cells[target];
        if from != to && cell.shops >= cell.capacity {
            return Err(PlacementError::ShopSetFull { shopset: to.into(), capacity: cell.capacity, shops: cell.shops });
        }
        Ok(from.to_string())
    }
}

/// The next name after `names` by the convention of this module; `taken` says which names exist.
pub fn next_name<'n>(names: impl Iterator<Item = &'n str>, taken: impl Fn(&str) -> bool) -> String {
    // prefix -> (members, highest number, its width)
    let mut groups: BTreeMap<&str, (usize, u64, usize)> = BTreeMap::new();
    let mut last: Option<&str> = None;
    for name in names {
        if last.is_none_or(|l| name > l) {
            last = Some(name);
        }
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits > 18 {
            continue;
        }
        let (prefix, number) = name.split_at(name.len() - digits);
        let Ok(number) = number.parse::<u64>() else { continue };
        let group = groups.entry(prefix).or_insert((0, 0, 0));
        group.0 += 1;
        if number >= group.1 {
            group.1 = number;
            group.2 = group.2.max(digits);
        }
    }
    // The largest group; among equals, the first prefix by name.
    let chosen = groups.iter().fold(None::<(&str, (usize, u64, usize))>, |best, (p, g)| match best {
        Some((_, b)) if b.0 >= g.0 => best,
        _ => Some((p, *g)),
    });
    let (prefix, mut number, width) = match chosen {
        Some((prefix, (_, number, width))) => (prefix.to_string(), number, width),
        None => (format!("{}-", last.unwrap_or("shopset")), 1, 1),
    };
    loop {
        number += 1;
        let name = format!("{prefix}{number:0width$}");
        if !taken(&name) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{NamedDestination, ShopSetSpec, TierSpec};

    fn tier(name: &str, from: Option<&str>, destinations: &[(&str, &str)]) -> Tier {
        let mut spec: TierSpec = serde_json::from_value(serde_json::json!({
            "app": {"url": "https://git.example.com/app.git"},
            "system": {"url": "https://git.example.com/system.git"},
        }))
        .unwrap();
        spec.promotion = from.map(|f| crate::api::Promotion { from: f.into(), ..Default::default() });
        spec.argocd.destinations = destinations
            .iter()
            .map(|(name, zone)| NamedDestination {
                name: name.to_string(),
                server: Some(format!("https://{name}.example.com")),
                cluster: None,
                failure_domain: [("zone".to_string(), zone.to_string())].into(),
            })
            .collect();
        Tier::new(name, spec)
    }

    /// A ShopSet of `tier` with `shops` shops named `<name>-<i>`, of `capacity`, on `destination`.
    fn ss(name: &str, tier: &str, shops: usize, capacity: Option<u32>, destination: Option<&str>) -> ShopSet {
        ShopSet::new(
            name,
            ShopSetSpec {
                tier: tier.into(),
                configuration: "shop-config".into(),
                shops: (0..shops).map(|i| format!("{name}-shop-{i}")).collect(),
                replicas: Some(2),
                images: Vec::new(),
                namespace: None,
                maintenance: None,
                destination: destination.map(str::to_string),
                capacity,
            },
        )
    }

    fn tiers() -> Vec<Tier> {
        vec![tier("tier-0", None, &[("eu-a", "a"), ("eu-b", "b")]), tier("tier-1", Some("tier-0"), &[])]
    }

    /// (name, ShopSets, shop, --tier, --grow, expected)
    type Case = (&'static str, Vec<ShopSet>, &'static str, Option<&'static str>, bool, Want);

    enum Want {
        In(&'static str),
        Grows(&'static str, Option<&'static str>, &'static str),
        Refused(&'static [&'static str]),
    }

    #[test]
    fn placement_table() {
        use Want::*;
        let t = tiers();
        let cases: Vec<Case> = vec![
            (
                "most free capacity wins",
                vec![ss("c-1", "tier-0", 3, Some(5), None), ss("c-2", "tier-0", 1, Some(5), None)],
                "new",
                None,
                false,
                In("c-2"),
            ),
            (
                "a full ShopSet is passed over",
                vec![ss("c-1", "tier-0", 2, Some(2), None), ss("c-2", "tier-0", 4, Some(5), None)],
                "new",
                None,
                false,
                In("c-2"),
            ),
            (
                "ties are broken by name",
                vec![ss("c-2", "tier-0", 1, Some(5), None), ss("c-1", "tier-0", 1, Some(5), None)],
                "new",
                None,
                false,
                In("c-1"),
            ),
            (
                "the failure domain serving fewer shops wins over more free capacity",
                vec![
                    ss("c-1", "tier-0", 1, Some(10), Some("eu-a")),
                    ss("c-2", "tier-0", 1, Some(10), Some("eu-a")),
                    ss("c-3", "tier-0", 1, Some(3), Some("eu-b")),
                ],
                "new",
                None,
                false,
                In("c-3"),
            ),
            (
                "no capacity counts as the most a ShopSet lists",
                vec![ss("c-1", "tier-0", 0, Some(400), None), ss("c-2", "tier-0", 0, None, None)],
                "new",
                None,
                false,
                In("c-2"),
            ),
            (
                "a ShopSet wholly in maintenance takes no new shops",
                vec![
                    {
                        let mut s = ss("c-1", "tier-0", 0, Some(5), None);
                        s.spec.maintenance = Some(crate::api::Maintenance {
                            reason: "x".into(),
                            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                "2026-12-01T00:00:00Z".parse().unwrap(),
                            ),
                            shops: vec![],
                        });
                        s
                    },
                    ss("c-2", "tier-0", 3, Some(5), None),
                ],
                "new",
                None,
                false,
                In("c-2"),
            ),
            (
                "--tier picks another tier",
                vec![ss("c-1", "tier-0", 0, Some(5), None), ss("late-1", "tier-1", 2, Some(5), None)],
                "new",
                Some("tier-1"),
                false,
                In("late-1"),
            ),
            (
                "growth: the next name, on the least used failure domain, copied from the last",
                vec![
                    ss("tier-0-cell-0007", "tier-0", 2, Some(2), Some("eu-a")),
                    ss("tier-0-cell-0006", "tier-0", 2, Some(2), Some("eu-a")),
                    ss("tier-0-cell-0005", "tier-0", 1, Some(1), Some("eu-b")),
                ],
                "new",
                None,
                true,
                Grows("tier-0-cell-0008", Some("eu-b"), "tier-0-cell-0007"),
            ),
            (
                "growth without numbered names appends -2; without destinations, none",
                vec![ss("late", "tier-1", 1, Some(1), None)],
                "new",
                Some("tier-1"),
                true,
                Grows("late-2", None, "late"),
            ),
            (
                "growth skips a name another tier already has",
                vec![ss("cell-1", "tier-0", 1, Some(1), Some("eu-a")), ss("cell-2", "tier-1", 0, Some(1), None)],
                "new",
                None,
                true,
                Grows("cell-3", Some("eu-b"), "cell-1"),
            ),
            (
                "every ShopSet full without --grow is refused, naming the proposal",
                vec![ss("c-1", "tier-0", 1, Some(1), Some("eu-a"))],
                "new",
                None,
                false,
                Refused(&[
                    "Tier/tier-0",
                    "every ShopSet of the tier is full",
                    "--grow",
                    "ShopSet/c-2 on destination eu-b",
                ]),
            ),
            (
                "a duplicate is refused, naming where it is served",
                vec![ss("c-1", "tier-0", 0, Some(5), None), ss("late-1", "tier-1", 2, Some(5), None)],
                "late-1-shop-1",
                None,
                false,
                Refused(&[
                    "shop \"late-1-shop-1\"",
                    "already served by ShopSet/late-1 (tier tier-1, spec.shops)",
                    "shopctl shop move",
                ]),
            ),
            (
                "an unknown tier is refused",
                vec![ss("c-1", "tier-0", 0, Some(5), None)],
                "new",
                Some("tier-9"),
                false,
                Refused(&["Tier/tier-9", "--tier", "Tiers: tier-0, tier-1", "fix: "]),
            ),
            (
                "an invalid shop ID is refused",
                vec![ss("c-1", "tier-0", 0, Some(5), None)],
                "-bad",
                None,
                false,
                Refused(&["shop \"-bad\"", "is not a shop ID"]),
            ),
            (
                "a tier without ShopSets is refused",
                vec![],
                "new",
                None,
                true,
                Refused(&["Tier/tier-0", "has no ShopSet", "write the tier's first ShopSet by hand"]),
            ),
        ];
        for (name, shopsets, shop, tier, grow, want) in cases {
            let got = place(&t, &shopsets, shop, tier, grow);
            match (want, got) {
                (In(expected), Ok(p)) => {
                    assert_eq!(p.shopset, expected, "{name}");
                    assert!(p.grown.is_none(), "{name}");
                }
                (Grows(expected, destination, from), Ok(p)) => {
                    assert_eq!(p.shopset, expected, "{name}");
                    assert_eq!(p.destination.as_deref(), destination, "{name}");
                    assert_eq!(p.grown, Some(Growth { copied_from: from.into() }), "{name}");
                }
                (Refused(words), Err(e)) => {
                    let text = e.to_string();
                    for w in words.iter().chain(&["fix: "]) {
                        assert!(text.contains(w), "{name}: {text:?} lacks {w:?}");
                    }
                }
                (_, got) => panic!("{name}: got {got:?}"),
            }
        }
    }

    #[test]
    fn the_start_tier_is_the_one_without_promotion_and_several_need_tier() {
        let shopsets = vec![ss("c-1", "tier-0", 0, Some(5), None)];
        let two = vec![tier("tier-0", None, &[]), tier("other", None, &[])];
        let err = place(&two, &shopsets, "new", None, false).unwrap_err();
        assert!(err.to_string().contains("Tiers other, tier-0 have no spec.promotion"), "{err}");
        assert_eq!(place(&two, &shopsets, "new", Some("tier-0"), false).unwrap().shopset, "c-1");
    }

    #[test]
    fn placing_many_balances_failure_domains_and_grows_in_sequence() {
        let t = tiers();
        let shopsets =
            vec![ss("cell-01", "tier-0", 0, Some(2), Some("eu-a")), ss("cell-02", "tier-0", 0, Some(2), Some("eu-b"))];
        let mut planner = Planner::new(&t, &shopsets);
        let placements: Vec<Placement> = (0..8).map(|i| planner.place(&format!("s{i}"), None, true).unwrap()).collect();
        let got: Vec<(String, Option<String>, bool)> =
            placements.iter().map(|p| (p.shopset.clone(), p.destination.clone(), p.grown.is_some())).collect();
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        let grown: Vec<bool> = got.iter().map(|(_, _, g)| *g).collect();
        assert_eq!(grown, [false, false, false, false, true, false, true, false]);
        // A grown ShopSet fills up before the next one grows, each on the less used domain.
        assert_eq!(names, ["cell-01", "cell-02", "cell-01", "cell-02", "cell-03", "cell-03", "cell-04", "cell-04"]);
        assert_eq!(got[4].1.as_deref(), Some("eu-a"));
        let grown = planner.new_shopset(&placements[4]).unwrap();
        assert_eq!(
            (grown.name_any().as_str(), grown.spec.shops.as_slice()),
            ("cell-03", ["s4".to_string()].as_slice())
        );
        assert_eq!(grown.spec.destination.as_deref(), Some("eu-a"));
        assert_eq!(grown.spec.capacity, Some(2));
        assert!(planner.new_shopset(&placements[5]).is_none(), "placed into it, not grown");
        assert_eq!(got[6].1.as_deref(), Some("eu-b"));
        // Placed shops are duplicates from then on.
        assert!(matches!(planner.place("s3", None, true), Err(PlacementError::Duplicate { .. })));
    }

    /// Destinations without failure-domain labels are a domain each, as `shopctl doctor` counts
    /// them: shops are spread over them, and growth goes to the less used one.
    #[test]
    fn destinations_without_labels_are_a_failure_domain_each() {
        let mut t = tier("tier-0", None, &[("dc-a", ""), ("dc-b", "")]);
        for d in &mut t.spec.argocd.destinations {
            d.failure_domain.clear();
        }
        let t = vec![t];
        // c-1 has the most room, but its cluster already serves more shops than c-2's.
        let shopsets =
            vec![ss("c-1", "tier-0", 3, Some(10), Some("dc-a")), ss("c-2", "tier-0", 2, Some(3), Some("dc-b"))];
        let mut planner = Planner::new(&t, &shopsets);
        let first = planner.place("s1", None, true).unwrap();
        assert_eq!((first.shopset.as_str(), first.destination.as_deref()), ("c-2", Some("dc-b")));
        assert!(first.failure_domain.is_empty(), "no labels to report: {first:?}");
        // c-2 is full now (3 of 3) and the clusters are even (3 and 3); then they alternate by load.
        assert_eq!(planner.place("s2", None, true).unwrap().shopset, "c-1");
        // Without room anywhere, the new ShopSet goes to the cluster serving fewer shops.
        let full = vec![ss("c-1", "tier-0", 5, Some(5), Some("dc-a")), ss("c-2", "tier-0", 2, Some(2), Some("dc-b"))];
        let grown = Planner::new(&t, &full).place("s3", None, true).unwrap();
        assert_eq!((grown.shopset.as_str(), grown.destination.as_deref()), ("c-3", Some("dc-b")));
        // A ShopSet naming no destination in a tier of one is on that one: same domain, same load.
        let mut one = tier("tier-0", None, &[("dc-a", "")]);
        one.spec.argocd.destinations[0].failure_domain.clear();
        let implicit = vec![ss("c-1", "tier-0", 1, Some(5), None), ss("c-2", "tier-0", 0, Some(5), Some("dc-a"))];
        let placed = Planner::new(&[one], &implicit).place("s4", None, false).unwrap();
        assert_eq!(placed.shopset, "c-2", "the most room within the one domain");
    }

    #[test]
    fn moves_are_checked() {
        let t = tiers();
        let shopsets = vec![ss("c-1", "tier-0", 2, Some(2), None), ss("c-2", "tier-0", 1, Some(2), None)];
        let planner = Planner::new(&t, &shopsets);
        assert_eq!(planner.check_move("c-1-shop-0", "c-2").unwrap(), "c-1");
        assert!(matches!(planner.check_move("c-2-shop-0", "c-1"), Err(PlacementError::ShopSetFull { .. })));
        assert!(matches!(planner.check_move("nope", "c-1"), Err(PlacementError::NotServed { .. })));
        assert!(matches!(planner.check_move("c-1-shop-0", "c-9"), Err(PlacementError::UnknownShopSet { .. })));
    }

    #[test]
    fn next_names_follow_the_convention() {
        let none = |_: &str| false;
        assert_eq!(next_name(["tier-0-cell-0007", "tier-0-cell-0003"].into_iter(), none), "tier-0-cell-0008");
        assert_eq!(next_name(["cell-9"].into_iter(), none), "cell-10");
        assert_eq!(next_name(["canary-eu", "canary-us"].into_iter(), none), "canary-us-2");
        // The largest group wins over an odd one out.
        assert_eq!(next_name(["a-1", "a-2", "b-9"].into_iter(), none), "a-3");
    }

    /// Not a timing assertion: a placement scans one tier, so this many finish in test time.
    #[test]
    fn many_placements_in_one_planner() {
        let t = tiers();
        let shopsets: Vec<ShopSet> = (0..1000)
            .map(|i| ss(&format!("cell-{i:04}"), "tier-0", 0, Some(10), Some(["eu-a", "eu-b"][i % 2])))
            .collect();
        let mut planner = Planner::new(&t, &shopsets);
        for i in 0..10_000 {
            planner.place(&format!("shop-{i}"), None, false).unwrap();
        }
        assert!(matches!(planner.place("one-more", None, false), Err(PlacementError::Full { .. })));
    }
}
