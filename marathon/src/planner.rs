//! The offer planner, pure: the apps that want launches, the instances already placed and the offers at hand →
//! which tasks to launch on which offer, and, for every app and offer that did not work out, why (Marathon's
//! `NoOfferMatchReason`s, counted for `/v2/queue`'s `processedOffersSummary`).

use std::collections::BTreeMap;

use agora_framework_sdk::{OfferPacker, PORTS, TaskBuilder, TaskRequest};
use agora_proto::model::{ContainerInfo, ContainerType, Offer, Ranges, Resource, Resources, TaskInfo, Uri, Volume};
use serde::{Deserialize, Serialize};

use crate::app::AppDefinition;
use crate::constraints::Placement;
use crate::pathid;

/// Why an offer was not used for an app, with Marathon's names, in the order Marathon checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    NoCorrespondingReservationFound,
    AgentMaintenance,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
    DeclinedScarceResources,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::UnfulfilledRole,
        Reason::UnfulfilledConstraint,
        Reason::NoCorrespondingReservationFound,
        Reason::AgentMaintenance,
        Reason::InsufficientCpus,
        Reason::InsufficientMemory,
        Reason::InsufficientDisk,
        Reason::InsufficientGpus,
        Reason::InsufficientPorts,
        Reason::DeclinedScarceResources,
    ];
}

/// One app asking for `count` more instances.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub app: &'a AppDefinition,
    pub count: u32,
    /// Service ports of the app, one per port definition (0 when none allocated).
    pub service_ports: Vec<u32>,
}

/// A task to launch, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub offer_id: String,
    pub app_id: String,
    pub instance_id: String,
    pub task: TaskInfo,
    pub placement: Placement,
    pub host_ports: Vec<u32>,
}

/// Per app, what happened to the offers it saw in this round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfferStats {
    pub processed: u64,
    pub used: u64,
    pub declined: BTreeMap<Reason, u64>,
}

/// An offer an app saw and could not use, and why (Marathon's `OfferMatchResult.NoMatch`).
#[derive(Clone, Debug, PartialEq)]
pub struct NoMatch {
    pub app_id: String,
    pub offer_id: String,
    pub reason: Reason,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matched {
    pub launches: Vec<Launch>,
    /// Offers nothing was launched on.
    pub unused: Vec<String>,
    pub stats: BTreeMap<String, OfferStats>,
    /// Per app, how many instances are still waiting after this round.
    pub unplaced: BTreeMap<String, u32>,
    /// Every offer an app saw and used nothing of, in the order seen (for `/v2/queue`'s `lastUnusedOffers`).
    pub no_matches: Vec<NoMatch>,
}

fn request_for(app: &AppDefinition) -> TaskRequest {
    let mut r = Resources::new();
    r.add(&Resources::from_vec([Resource::scalar("cpus", app.cpus)]));
    if app.mem > 0.0 {
        r.add(&Resources::from_vec([Resource::scalar("mem", app.mem)]));
    }
    if app.disk > 0.0 {
        r.add(&Resources::from_vec([Resource::scalar("disk", app.disk)]));
    }
    if app.require_ports {
        let ports: Vec<(u64, u64)> =
            app.port_definitions.iter().map(|p| (u64::from(p.port), u64::from(p.port))).collect();
        if !ports.is_empty() {
            r.add(&Resources::from_vec([Resource::ranges(PORTS, ports)]));
        }
        TaskRequest::new(r)
    } else {
        TaskRequest::new(r).with_ports(app.port_definitions.len())
    }
}

/// The first reason `remaining` cannot hold one instance of `app`.
fn shortfall(app: &AppDefinition, remaining: &Resources) -> Reason {
    let lacks = |name: &str, want: f64| remaining.scalar(name).as_f64() + 1e-9 < want;
    if lacks("cpus", app.cpus) {
        Reason::InsufficientCpus
    } else if lacks("mem", app.mem) {
        Reason::InsufficientMemory
    } else if lacks("disk", app.disk) {
        Reason::InsufficientDisk
    } else {
        Reason::InsufficientPorts
    }
}

fn env_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The task for one instance of `app` on `offer` with `resources` (carved, ports concrete).
pub fn build_task(
    app: &AppDefinition,
    task_id: &str,
    offer: &Offer,
    resources: Resources,
    service_ports: &[u32],
) -> (TaskInfo, Vec<u32>) {
    let host_ports: Vec<u32> = if app.require_ports {
        app.port_definitions.iter().map(|p| p.port).collect()
    } else {
        resources.ranges(PORTS).values().map(|p| p as u32).collect()
    };
    let mut b = TaskBuilder::new(task_id, pathid::task_name(&app.id)).agent(&offer.agent_id).resources(resources);
    let in_image = app.container.as_ref().is_some_and(|c| c.docker.is_some());
    b = match (&app.cmd, &app.args) {
        (Some(cmd), _) if !cmd.is_empty() || !in_image => b.shell(cmd.clone()),
        // In an image, `args` follow its Entrypoint and no command runs its Entrypoint/Cmd: Mesos's docker/runtime
        // rules for `shell: false` without a value.
        (_, args) if in_image => b.exec("", args.clone().unwrap_or_default()),
        (None, Some(args)) if !args.is_empty() => b.exec(args[0].clone(), args.clone()),
        _ => b.shell(""),
    };
    for (k, v) in &app.env {
        b = b.env(k, v);
    }
    for (i, port) in host_ports.iter().enumerate() {
        b = b.env(format!("PORT{i}"), port.to_string());
        let def = app.port_definitions.get(i);
        let declared = def.map(|d| d.port).filter(|p| *p != 0).or(service_ports.get(i).copied().filter(|p| *p != 0));
        if let Some(declared) = declared {
            b = b.env(format!("PORT_{declared}"), port.to_string());
        }
        if let Some(name) = def.and_then(|d| d.name.as_deref()) {
            b = b.env(format!("PORT_{}", env_name(name)), port.to_string());
        }
    }
    if let Some(first) = host_ports.first() {
        b = b.env("PORT", first.to_string());
    }
    let ports_list: Vec<String> = host_ports.iter().map(u32::to_string).collect();
    b = b
        .env("PORTS", ports_list.join(","))
        .env("HOST", offer.hostname.clone())
        .env("MARATHON_APP_ID", app.id.clone())
        .env("MARATHON_APP_VERSION", app.version.clone())
        .env("MARATHON_APP_RESOURCE_CPUS", app.cpus.to_string())
        .env("MARATHON_APP_RESOURCE_MEM", app.mem.to_string())
        .env("MARATHON_APP_RESOURCE_DISK", app.disk.to_string())
        .env("MARATHON_APP_RESOURCE_GPUS", app.gpus.to_string())
        .env("MARATHON_APP_LABELS", app.labels.keys().map(|k| env_name(k)).collect::<Vec<_>>().join(" "))
        .env("MESOS_TASK_ID", task_id);
    for (k, v) in &app.labels {
        b = b.env(format!("MARATHON_APP_LABEL_{}", env_name(k)), v.clone());
    }
    for (k, v) in &app.labels {
        b = b.label(k.clone(), v.clone());
    }
    if let Some(grace) = app.task_kill_grace_period_seconds {
        b = b.kill_grace_period(grace as f64);
    }
    let mut task = b.build();
    if let Some(command) = task.command.as_mut() {
        command.user = app.user.clone();
        command.uris = app
            .fetch
            .iter()
            .map(|f| Uri {
                value: f.uri.clone(),
                executable: f.executable,
                extract: f.extract,
                cache: f.cache,
                output_file: f.dest_path.clone().unwrap_or_default(),
            })
            .collect();
    }
    // A task carries one check (validation allows no more); its port index becomes this instance's host port.
    task.health_check = app.health_checks.first().map(|h| h.to_mesos(&host_ports));
    task.container = app.container.as_ref().map(|c| ContainerInfo {
        kind: ContainerType::Mesos,
        rootfs: None,
        volumes: c
            .volumes
            .iter()
            .map(|v| Volume {
                container_path: v.container_path.clone(),
                host_path: v.host_path.clone(),
                read_only: v.mode == "RO",
            })
            .collect(),
        hostname: None,
        image: c.docker.as_ref().map(|d| d.image.clone()),
        network_infos: vec![],
    });
    (task, host_ports)
}

/// Places `requests` on `offers`. `placed` holds, per app id, where its live instances are (for constraints);
/// `next_instance` names the instance each launch is (`<app>.instance-<uuid>`) and its incarnation (the task id is
/// `<instance id>._app.<incarnation>`), so that the function itself stays pure.
///
/// Apps are served in the order given. An app's instances go round the offers one at a time, so that they spread
/// over the agents at hand rather than filling the first offer: 1,000 instances offered 10 agents that each fit all
/// of them land 100 per agent, which then start them side by side (Marathon reaches a spread by capping each offer
/// at `--max_instances_per_offer` over many offer cycles). An offer leaves an app's round once it cannot take one
/// more of its instances, and that is why the app declined it when it took none.
pub fn match_offers(
    requests: &[Request<'_>],
    placed: &BTreeMap<String, Vec<Placement>>,
    offers: &[Offer],
    next_instance: &mut dyn FnMut(&str) -> (String, u32),
) -> Matched {
    let mut out = Matched::default();
    let mut placed: BTreeMap<String, Vec<Placement>> = placed.clone();
    let mut packers: Vec<OfferPacker> = offers.iter().map(OfferPacker::new).collect();
    let hosts: Vec<Placement> =
        offers.iter().map(|o| Placement { hostname: o.hostname.clone(), attributes: o.attributes.clone() }).collect();
    let mut used = vec![false; offers.len()];
    for req in requests {
        let app = req.app;
        let mut want = req.count;
        if want == 0 {
            continue;
        }
        let request = request_for(app);
        let mine = placed.entry(app.id.clone()).or_default();
        // Per offer: how many of this app's instances it took, and why it stopped taking them (None: still open).
        let mut launched = vec![0u32; offers.len()];
        let mut stopped: Vec<Option<Reason>> = vec![None; offers.len()];
        let mut open = offers.len();
        while want > 0 && open > 0 {
            for (k, offer) in offers.iter().enumerate() {
                if want == 0 {
                    break;
                }
                if stopped[k].is_some() {
                    continue;
                }
                let here = &hosts[k];
                let fits_constraints = app.constraints.is_empty() || {
                    let refs: Vec<&Placement> = mine.iter().collect();
                    app.constraints.iter().all(|c| c.accepts(here, &refs))
                };
                if !fits_constraints {
                    stopped[k] = Some(Reason::UnfulfilledConstraint);
                    open -= 1;
                    continue;
                }
                let before = packers[k].remaining().clone();
                let taken = match &app.accepted_resource_roles {
                    None => packers[k].take(&request),
                    Some(roles) => packers[k].take_within(&request, |role| roles.iter().any(|r| r == role)),
                };
                let Some(resources) = taken else {
                    // Resources of other roles would have done: the roles are why (Marathon's UnfulfilledRole).
                    let other_roles = app.accepted_resource_roles.is_some()
                        && OfferPacker::from_resources(before.clone()).take(&request).is_some();
                    stopped[k] = Some(if other_roles { Reason::UnfulfilledRole } else { shortfall(app, &before) });
                    open -= 1;
                    continue;
                };
                let (instance_id, incarnation) = next_instance(&app.id);
                let task_id = format!("{instance_id}._app.{incarnation}");
                let (task, host_ports) = build_task(app, &task_id, offer, resources, &req.service_ports);
                mine.push(here.clone());
                out.launches.push(Launch {
                    offer_id: offer.id.clone(),
                    app_id: app.id.clone(),
                    instance_id,
                    task,
                    placement: here.clone(),
                    host_ports,
                });
                want -= 1;
                launched[k] += 1;
            }
        }
        let stats = out.stats.entry(app.id.clone()).or_default();
        for (k, offer) in offers.iter().enumerate() {
            // An offer counts as processed by the app once it was tried; the round ends before trying the rest
            // when the last instance is placed.
            if launched[k] > 0 {
                stats.processed += 1;
                stats.used += 1;
                used[k] = true;
            } else if let Some(r) = stopped[k] {
                stats.processed += 1;
                *stats.declined.entry(r).or_default() += 1;
                out.no_matches.push(NoMatch { app_id: app.id.clone(), offer_id: offer.id.clone(), reason: r });
            }
        }
        if want > 0 {
            out.unplaced.insert(app.id.clone(), want);
        }
    }
    for (k, offer) in offers.iter().enumerate() {
        if !used[k] {
            out.unused.push(offer.id.clone());
        }
    }
    out
}

/// Ranges helper for tests and the shell: whether `ports` are all inside the offer's port ranges.
pub fn offer_has_ports(offer: &Offer, ports: &[u32]) -> bool {
    let have = offer.resources.ranges(PORTS);
    ports.iter().all(|p| have.contains(&Ranges::single(u64::from(*p))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::parse_app;
    use agora_proto::model::Attributes;
    use proptest::prelude::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn offer(id: &str, host: &str, res: &str, attrs: &str) -> Offer {
        Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: format!("agent-{host}"),
            hostname: host.into(),
            resources: res.parse().unwrap(),
            attributes: Attributes::parse(attrs).unwrap(),
            role: "*".into(),
            url: String::new(),
        }
    }

    fn app(v: serde_json::Value) -> AppDefinition {
        let mut a = parse_app(&v, None, None).unwrap();
        a.version = "2026-01-01T00:00:00.000Z".into();
        a
    }

    fn ids() -> impl FnMut(&str) -> (String, u32) {
        let mut n = 0;
        move |app: &str| {
            n += 1;
            (format!("{}.instance-{n}", pathid::task_prefix(app)), 1)
        }
    }

    #[test]
    fn launches_with_ports_and_environment() {
        let a = app(json!({"id": "/web", "cmd": "serve $PORT0", "cpus": 0.5, "mem": 64, "instances": 2,
            "portDefinitions": [{"port": 0, "name": "http"}], "labels": {"team": "a"}}));
        let reqs = [Request { app: &a, count: 2, service_ports: vec![10001] }];
        let o = offer("o1", "h1", "cpus:2;mem:256;ports:[31000-31010]", "");
        let m = match_offers(&reqs, &BTreeMap::new(), &[o], &mut ids());
        assert_eq!(m.launches.len(), 2);
        let l = &m.launches[0];
        assert_eq!(l.task.task_id, "web.instance-1._app.1");
        assert_eq!(l.task.name, "web");
        let env: BTreeMap<_, _> = l.task.command.as_ref().unwrap().environment.iter().cloned().collect();
        let p = l.host_ports[0].to_string();
        assert!((31000..=31010).contains(&l.host_ports[0]));
        assert_eq!(env["PORT0"], p);
        assert_eq!(env["PORT"], p);
        assert_eq!(env["PORT_HTTP"], p);
        assert_eq!(env["PORT_10001"], p);
        assert_eq!(env["HOST"], "h1");
        assert_eq!(env["MARATHON_APP_ID"], "/web");
        assert_eq!(env["MARATHON_APP_LABEL_TEAM"], "a");
        assert_ne!(m.launches[0].host_ports, m.launches[1].host_ports);
        assert!(m.unused.is_empty() && m.unplaced.is_empty());
    }

    /// `acceptedResourceRoles` picks the offered resources by role, and the tasks carry the roles they took; an
    /// offer that would fit with other roles is declined as UnfulfilledRole.
    #[test]
    fn accepted_resource_roles_pick_reserved_or_unreserved_resources() {
        let offered = "cpus(public):1;mem(public):128;ports(public):[31000-31009];cpus:1;mem:128;ports:[32000-32009]";
        let roles_of = |l: &Launch| -> BTreeSet<String> { l.task.resources.iter().map(|r| r.role.clone()).collect() };
        let one_role = |role: &str| BTreeSet::from([role.to_string()]);
        // `count` instances of the app with `body` on one offer of `resources`.
        let place = |body: serde_json::Value, count: u32, resources: &str| {
            let a = app(body);
            match_offers(
                &[Request { app: &a, count, service_ports: vec![10001] }],
                &BTreeMap::new(),
                &[offer("o1", "h1", resources, "")],
                &mut ids(),
            )
        };
        let public = json!({"id": "/pub", "cmd": "x", "cpus": 0.5, "mem": 64, "acceptedResourceRoles": ["public"]});
        let m = place(public.clone(), 3, offered);
        assert_eq!(m.launches.len(), 2, "two fit in the public reservation");
        for l in &m.launches {
            assert_eq!(roles_of(l), one_role("public"));
            assert!((31000..=31009).contains(&l.host_ports[0]), "{:?}", l.host_ports);
        }
        assert_eq!(m.unplaced["/pub"], 1);
        // An offer of unreserved resources only would hold the third: declined for its role.
        let m = place(public, 1, "cpus:1;mem:128;ports:[32000-32009]");
        assert!(m.launches.is_empty());
        assert_eq!(m.stats["/pub"].declined[&Reason::UnfulfilledRole], 1);

        let m =
            place(json!({"id": "/u", "cmd": "x", "cpus": 0.5, "mem": 64, "acceptedResourceRoles": ["*"]}), 1, offered);
        assert_eq!(roles_of(&m.launches[0]), one_role("*"));

        // Without acceptedResourceRoles any offered role serves, the reservation first; too little anywhere is
        // the resource's shortfall, not the role.
        let m = place(json!({"id": "/a", "cmd": "x", "cpus": 0.5, "mem": 64}), 1, offered);
        assert_eq!(roles_of(&m.launches[0]), one_role("public"));
        let big = json!({"id": "/b", "cmd": "x", "cpus": 4, "mem": 64, "acceptedResourceRoles": ["public"]});
        assert_eq!(place(big, 1, offered).stats["/b"].declined[&Reason::InsufficientCpus], 1);
    }

    #[test]
    fn fetch_and_volumes_become_uris_and_a_mesos_container() {
        let a = app(json!({"id": "/f", "cmd": "./run", "cpus": 0.1, "mem": 32,
            "fetch": [{"uri": "http://h/run", "executable": true, "destPath": "run"}, {"uri": "/srv/a.tgz"}],
            "container": {"type": "MESOS", "volumes": [{"containerPath": "/data", "hostPath": "/srv", "mode": "RO"}]}}));
        let reqs = [Request { app: &a, count: 1, service_ports: vec![10001] }];
        let o = offer("o1", "h1", "cpus:1;mem:128;ports:[31000-31010]", "");
        let m = match_offers(&reqs, &BTreeMap::new(), &[o], &mut ids());
        let task = &m.launches[0].task;
        let uris = &task.command.as_ref().unwrap().uris;
        assert_eq!(
            uris[0],
            Uri {
                value: "http://h/run".into(),
                executable: true,
                extract: true,
                cache: false,
                output_file: "run".into()
            }
        );
        assert_eq!((uris[1].value.as_str(), uris[1].output_file.as_str()), ("/srv/a.tgz", ""));
        let c = task.container.as_ref().expect("a container");
        assert_eq!((c.kind, c.rootfs.as_deref(), c.image.as_deref()), (ContainerType::Mesos, None, None));
        assert_eq!(
            c.volumes,
            vec![Volume { container_path: "/data".into(), host_path: "/srv".into(), read_only: true }]
        );
        let imaged = app(json!({"id": "/i", "cmd": "x", "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "busybox:1.36"}}}));
        let reqs = [Request { app: &imaged, count: 1, service_ports: vec![10003] }];
        let o = offer("o3", "h1", "cpus:1;mem:128;ports:[31000-31010]", "");
        let m = match_offers(&reqs, &BTreeMap::new(), &[o], &mut ids());
        let c = m.launches[0].task.container.clone().expect("a container");
        assert_eq!((c.image.as_deref(), c.rootfs), (Some("busybox:1.36"), None));
        // In an image, `args` follow the image's Entrypoint and no command at all runs its Entrypoint/Cmd.
        for (body, arguments) in [
            (json!({"id": "/e", "args": ["-v", "1"]}), vec!["-v".to_string(), "1".to_string()]),
            (json!({"id": "/e"}), vec![]),
        ] {
            let mut body = body;
            body["container"] = json!({"type": "MESOS", "docker": {"image": "busybox:1.36"}});
            let entry = app(body);
            let reqs = [Request { app: &entry, count: 1, service_ports: vec![10004] }];
            let o = offer("o4", "h1", "cpus:1;mem:128;ports:[31000-31010]", "");
            let m = match_offers(&reqs, &BTreeMap::new(), &[o], &mut ids());
            let command = m.launches[0].task.command.clone().expect("a command");
            assert_eq!((command.shell, command.value.as_str(), command.arguments), (false, "", arguments));
        }
        let plain = app(json!({"id": "/p", "cmd": "x", "cpus": 0.1, "mem": 32}));
        let reqs = [Request { app: &plain, count: 1, service_ports: vec![10002] }];
        let o = offer("o2", "h1", "cpus:1;mem:128;ports:[31000-31010]", "");
        assert_eq!(match_offers(&reqs, &BTreeMap::new(), &[o], &mut ids()).launches[0].task.container, None);
    }

    #[test]
    fn unique_hostname_on_two_agents_places_two_and_says_why() {
        let a = app(json!({"id": "/u", "cmd": "x", "cpus": 0.1, "mem": 16, "instances": 3,
            "constraints": [["hostname", "UNIQUE"]]}));
        let reqs = [Request { app: &a, count: 3, service_ports: vec![0] }];
        let offers = [
            offer("o1", "h1", "cpus:4;mem:1024;ports:[31000-32000]", ""),
            offer("o2", "h2", "cpus:4;mem:1024;ports:[31000-32000]", ""),
        ];
        let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
        assert_eq!(m.launches.len(), 2);
        assert_eq!(m.unplaced["/u"], 1);
        // Both offers were used once; a later round with the hosts taken declines with UnfulfilledConstraint.
        let placed = BTreeMap::from([("/u".to_string(), m.launches.iter().map(|l| l.placement.clone()).collect())]);
        let reqs = [Request { app: &a, count: 1, service_ports: vec![0] }];
        let m2 = match_offers(&reqs, &placed, &offers, &mut ids());
        assert!(m2.launches.is_empty());
        assert_eq!(m2.stats["/u"].declined[&Reason::UnfulfilledConstraint], 2);
        assert_eq!(m2.unused.len(), 2);
        let no_match =
            |o: &str| NoMatch { app_id: "/u".into(), offer_id: o.into(), reason: Reason::UnfulfilledConstraint };
        assert_eq!(m2.no_matches, [no_match("o1"), no_match("o2")]);
        assert!(m.no_matches.is_empty(), "the first round used both offers");
    }

    #[test]
    fn reasons_for_small_offers() {
        let a = app(json!({"id": "/big", "cmd": "x", "cpus": 1, "mem": 512, "ports": [0, 0]}));
        let reqs = [Request { app: &a, count: 1, service_ports: vec![0, 0] }];
        let offers = [
            offer("o1", "h1", "cpus:0.5;mem:1024;ports:[1-10]", ""),
            offer("o2", "h2", "cpus:2;mem:256;ports:[1-10]", ""),
            offer("o3", "h3", "cpus:2;mem:1024;ports:[5-5]", ""),
        ];
        let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
        let d = &m.stats["/big"].declined;
        assert_eq!(d[&Reason::InsufficientCpus], 1);
        assert_eq!(d[&Reason::InsufficientMemory], 1);
        assert_eq!(d[&Reason::InsufficientPorts], 1);
        assert_eq!(m.stats["/big"].processed, 3);
    }

    #[test]
    fn require_ports_uses_the_declared_host_ports() {
        let a = app(json!({"id": "/fixed", "cmd": "x", "cpus": 0.1, "mem": 16, "requirePorts": true,
            "portDefinitions": [{"port": 31005}]}));
        let reqs = [Request { app: &a, count: 2, service_ports: vec![31005] }];
        let offers = [offer("o1", "h1", "cpus:4;mem:1024;ports:[31000-31010]", "")];
        let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
        assert_eq!(m.launches.len(), 1, "the second copy cannot get the same port on the same host");
        assert_eq!(m.launches[0].host_ports, vec![31005]);
        assert_eq!(m.stats["/fixed"].used, 1);
    }

    #[test]
    fn group_by_and_max_per_spread() {
        let a = app(json!({"id": "/g", "cmd": "x", "cpus": 0.1, "mem": 16, "instances": 4,
            "constraints": [["rack", "GROUP_BY", "2"], ["hostname", "MAX_PER", "2"]]}));
        let reqs = [Request { app: &a, count: 4, service_ports: vec![0] }];
        let offers = [
            offer("o1", "h1", "cpus:4;mem:1024;ports:[31000-32000]", "rack:r1"),
            offer("o2", "h2", "cpus:4;mem:1024;ports:[31000-32000]", "rack:r2"),
        ];
        let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
        // The instances go round the offers: r1, r2, r1, r2; each rack and host gets two, as GROUP_BY and MAX_PER
        // ask. (Filling o1 first stopped after one: rack r1 may not take a second while r2 has none.)
        let per_host = |h: &str| m.launches.iter().filter(|l| l.placement.hostname == h).count();
        assert_eq!((per_host("h1"), per_host("h2")), (2, 2));
        assert!(m.unplaced.is_empty());
    }

    #[test]
    fn instances_spread_over_offers_that_could_each_take_them_all() {
        let a = app(json!({"id": "/many", "cmd": "x", "cpus": 0.1, "mem": 16, "instances": 10}));
        let b = app(json!({"id": "/more", "cmd": "x", "cpus": 0.1, "mem": 16, "instances": 3}));
        let reqs = [
            Request { app: &a, count: 10, service_ports: vec![0] },
            Request { app: &b, count: 3, service_ports: vec![0] },
        ];
        let offers: Vec<Offer> = (1..=3)
            .map(|i| offer(&format!("o{i}"), &format!("h{i}"), "cpus:4;mem:1024;ports:[31000-32000]", ""))
            .collect();
        let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
        let on =
            |app: &str, h: &str| m.launches.iter().filter(|l| l.app_id == app && l.placement.hostname == h).count();
        assert_eq!((on("/many", "h1"), on("/many", "h2"), on("/many", "h3")), (4, 3, 3));
        // The next app goes round from the first offer as well.
        assert_eq!((on("/more", "h1"), on("/more", "h2"), on("/more", "h3")), (1, 1, 1));
        assert_eq!(m.stats["/many"].used, 3);
        assert!(m.unused.is_empty() && m.unplaced.is_empty());
    }

    proptest! {
        /// Every wanted instance is either launched or counted as unplaced; every launch fits its offer (no
        /// offer is over-committed); constraints hold for UNIQUE hostname.
        #[test]
        fn every_instance_placed_or_explained(count in 0u32..12, cpus in prop::collection::vec(0u32..5, 1..5),
                                              unique in any::<bool>()) {
            let mut def = json!({"id": "/p", "cmd": "x", "cpus": 1, "mem": 16, "instances": count});
            if unique { def["constraints"] = json!([["hostname", "UNIQUE"]]); }
            let a = app(def);
            let offers: Vec<Offer> = cpus.iter().enumerate()
                .map(|(i, c)| offer(&format!("o{i}"), &format!("h{i}"), &format!("cpus:{c};mem:1024;ports:[1-100]"), ""))
                .collect();
            let reqs = [Request { app: &a, count, service_ports: vec![0] }];
            let m = match_offers(&reqs, &BTreeMap::new(), &offers, &mut ids());
            let unplaced = m.unplaced.get("/p").copied().unwrap_or(0);
            prop_assert_eq!(m.launches.len() as u32 + unplaced, count);
            for (i, o) in offers.iter().enumerate() {
                let mut total = Resources::new();
                for l in m.launches.iter().filter(|l| l.offer_id == o.id) { total.add(&l.task.resources); }
                prop_assert!(o.resources.contains(&total), "offer {} over-committed", i);
                let n = m.launches.iter().filter(|l| l.offer_id == o.id).count();
                if unique { prop_assert!(n <= 1); }
            }
            let total_cap: u32 = cpus.iter().map(|c| if unique { (*c).min(1) } else { *c }).sum();
            prop_assert_eq!(m.launches.len() as u32, count.min(total_cap));
            if unplaced > 0 {
                let s = &m.stats["/p"];
                prop_assert_eq!(s.processed, s.used + s.declined.values().sum::<u64>());
            }
        }
    }
}
