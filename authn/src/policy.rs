//! Which callers each RPC admits, declared once per service and enforced in one place.

use std::collections::HashMap;

use prost::Message;
use token::Role;

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a token, if sent, is ignored (signing in must work with a stale token lying around).
    Public,
    /// Anyone, but a token that is sent must be valid; its claims reach the handler, which may
    /// grant more to a caller who has one (an admin creating an admin at sign-up).
    OptionalToken,
    /// Any valid token.
    SignedIn,
    /// A valid token carrying at least one of these roles.
    AnyRole(&'static [Role]),
}

/// The access rule of every method of a server, by full gRPC path (`/pkg.Service/Method`).
/// A path with no rule is refused: a method nobody thought about is closed, not open.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: HashMap<String, Access>,
}

/// Infrastructure services every server exposes to anyone: probes and grpcurl need them.
const PUBLIC_SERVICES: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

impl Policy {
    /// `service` is the full protobuf name (`person.v1.PersonService`); `rules` name its methods.
    pub fn new(service: &str, rules: &[(&str, Access)]) -> Self {
        Self::default().with(service, rules)
    }

    /// Adds the rules of another service served by the same server.
    pub fn with(mut self, service: &str, rules: &[(&str, Access)]) -> Self {
        for (method, access) in rules {
            self.rules.insert(format!("/{service}/{method}"), *access);
        }
        self
    }

    pub fn access(&self, path: &str) -> Option<Access> {
        if PUBLIC_SERVICES.iter().any(|p| path.starts_with(p)) {
            return Some(Access::Public);
        }
        self.rules.get(path).copied()
    }

    /// Everything wrong with the policy of a server serving `service`: its methods without a
    /// rule, then rules naming no method. Each service has a test asserting this is empty, so
    /// adding an RPC without deciding who may call it fails the build.
    pub fn problems(&self, service: &str) -> Vec<String> {
        let mut problems = self.methods_without_rule(service);
        problems.extend(self.rules_without_method());
        problems
    }

    /// Methods of `service` (as the compiled protos describe it) that have no rule. Each service
    /// has a test asserting this is empty, so adding an RPC without a policy fails the build.
    pub fn methods_without_rule(&self, service: &str) -> Vec<String> {
        let Ok(set) = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET) else {
            return vec![format!(
                "cannot decode the descriptor set to check {service}"
            )];
        };
        let mut found = false;
        let mut missing = Vec::new();
        for file in &set.file {
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if full != service {
                    continue;
                }
                found = true;
                for method in &svc.method {
                    let path = format!("/{full}/{}", method.name());
                    if !self.rules.contains_key(&path) {
                        missing.push(path);
                    }
                }
            }
        }
        if !found {
            missing.push(format!("service {service} is not in the descriptor set"));
        }
        missing
    }

    /// Rules naming methods that do not exist (a typo would otherwise leave the real one closed
    /// and go unnoticed).
    pub fn rules_without_method(&self) -> Vec<String> {
        let Ok(set) = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET) else {
            return vec!["cannot decode the descriptor set".to_owned()];
        };
        let known: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service.iter().flat_map(move |s| {
                    s.method
                        .iter()
                        .map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
                })
            })
            .collect();
        let mut unknown: Vec<String> = self
            .rules
            .keys()
            .filter(|path| !known.contains(path))
            .cloned()
            .collect();
        unknown.sort();
        unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_methods_have_no_access_and_probes_are_public() {
        let policy = Policy::new(
            "person.v1.PersonService",
            &[("GetPerson", Access::SignedIn)],
        );
        assert_eq!(
            policy.access("/person.v1.PersonService/GetPerson"),
            Some(Access::SignedIn)
        );
        assert_eq!(policy.access("/person.v1.PersonService/DeletePerson"), None);
        assert_eq!(
            policy.access("/grpc.health.v1.Health/Check"),
            Some(Access::Public)
        );
    }

    #[test]
    fn the_descriptor_check_finds_missing_and_misspelt_rules() {
        let policy = Policy::new(
            "person.v1.PersonService",
            &[("GetPersons", Access::SignedIn)],
        );
        let missing = policy.methods_without_rule("person.v1.PersonService");
        assert!(missing.contains(&"/person.v1.PersonService/GetPerson".to_owned()));
        assert_eq!(missing.len(), 5);
        assert_eq!(
            policy.rules_without_method(),
            vec!["/person.v1.PersonService/GetPersons".to_owned()]
        );
        assert_eq!(policy.problems("person.v1.PersonService").len(), 6);
    }
}
