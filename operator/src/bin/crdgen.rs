//! Prints the `DogCluster` CustomResourceDefinition as YAML.
use dogfs_operator::crd::DogCluster;
use kube::CustomResourceExt;
fn main() -> anyhow::Result<()> {
    let yaml = serde_yaml::to_string(&DogCluster::crd())?;
    std::io::Write::write_all(&mut std::io::stdout(), yaml.as_bytes())?;
    Ok(())
}
